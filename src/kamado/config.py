"""Shared pieces of the recipe schema: a strict pydantic base and readable validation errors."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment, and a
    number is finite wherever one is validated (NaN and ±inf are refused, in nested dicts and lists too)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)


class KamadoError(Exception):
    """An error meant for the user: printed without a traceback by the CLI."""


class ConfigError(KamadoError):
    """A recipe or config file that does not validate; the message names the YAML path."""


EXIT_PREEMPTED = 75  # sysexits' EX_TEMPFAIL: stopped on request with a checkpoint; run it again to continue


class Preempted(KamadoError):
    """Training stopped on a preemption signal after finishing its step, with a complete checkpoint of that step.

    Not a failure: the same command (a requeued Slurm job) resumes from ``checkpoint``. Processes that end
    with it exit with :data:`EXIT_PREEMPTED`."""

    def __init__(self, message: str, *, step: int = 0, checkpoint: str | None = None, signal: str = "") -> None:
        super().__init__(message)
        self.step, self.checkpoint, self.signal = step, checkpoint, signal


_TYPE_WORDS = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "finite_number": "expected a finite number (not NaN or infinity)",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
}


def _loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for x in loc:
        if isinstance(x, int):
            parts.append(f"[{x}]")
        else:
            parts.append(("." if parts else "") + str(x))
    return "".join(parts) or "<root>"


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``pretrain.optimizer.lr: expected a number (got 'abc')``."""
    lines = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        path = _loc(loc)
        if prefix:
            path = f"{prefix}.{path}" if path != "<root>" else prefix
        msg = _TYPE_WORDS.get(e["type"], e["msg"].removeprefix("Value error, "))
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see `kamado run --help`)"
        got = e.get("input")
        if e["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict | list):
            msg += f" (got {got!r})"
        lines.append(f"{path}: {msg}")
    return "\n".join(lines)


def parse_assignments(items: str | list[str] | None, option: str, cast: Any, example: str) -> dict[str, Any]:
    """Parse CLI values like ``ja=0.6,en=0.4`` (comma-separated and/or repeated) into a dict.

    ``cast`` converts each value (``int``, ``float``); a malformed part is a :class:`KamadoError` naming
    ``option`` and showing ``example``.
    """
    out: dict[str, Any] = {}
    for item in [items] if isinstance(items, str) else items or []:
        for part in item.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise KamadoError(f"{option} {part!r}: expected NAME=VALUE, e.g. {example}")
            k, v = part.split("=", 1)
            try:
                out[k.strip()] = cast(v.strip())
            except ValueError:
                raise KamadoError(f"{option} {part!r}: {v.strip()!r} is not a valid {cast.__name__}") from None
            if isinstance(out[k.strip()], float) and not math.isfinite(out[k.strip()]):
                raise KamadoError(f"{option} {part!r}: expected a finite number (not NaN or infinity)")
    return out


# limits of a YAML document kamado reads (a recipe, a filter chain, a --set value): far above any real recipe
YAML_MAX_BYTES = 4 << 20  # 4 MiB of text
YAML_MAX_NODES = 200_000  # values after aliases are expanded (an alias bomb expands to billions)
YAML_MAX_DEPTH = 64  # nesting of mappings and lists


def load_yaml(text: str, source: str = "<yaml>") -> Any:
    """Parse YAML safely (plain data only) within limits of size, nesting and alias expansion.

    Aliases let a few hundred bytes stand for billions of values once anything walks or serialises them (an
    "alias bomb"); the composed document is measured before any Python object is built, so such a file is
    refused at once with a :class:`ConfigError` naming the limit. Syntax errors are left to the caller
    (``yaml.YAMLError``).
    """
    import yaml
    from yaml.nodes import MappingNode, Node, SequenceNode

    if len(text) > YAML_MAX_BYTES:
        raise ConfigError(f"{source}: {len(text):,} characters; a YAML file kamado reads is at most "
                          f"{YAML_MAX_BYTES:,}")
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError(f"{source}: nested deeper than {YAML_MAX_DEPTH} levels") from None
        if node is None:
            return None
        sizes: dict[int, int] = {}  # expanded size of each node already measured (aliases share nodes)
        active: set[int] = set()

        def size(n: Node, depth: int) -> int:
            if depth > YAML_MAX_DEPTH:
                raise ConfigError(f"{source}: nested deeper than {YAML_MAX_DEPTH} levels (line {n.start_mark.line + 1})")
            if id(n) in sizes:
                return sizes[id(n)]
            if id(n) in active:
                raise ConfigError(f"{source}: an alias refers to itself (line {n.start_mark.line + 1})")
            active.add(id(n))
            total = 1
            if isinstance(n, SequenceNode):
                kids = n.value
            elif isinstance(n, MappingNode):
                kids = [x for kv in n.value for x in kv]
            else:
                kids = []
            for k in kids:
                total += size(k, depth + 1)
                if total > YAML_MAX_NODES:
                    raise ConfigError(f"{source}: expands to more than {YAML_MAX_NODES:,} values (aliases such as "
                                      f"*name repeat what they refer to; line {n.start_mark.line + 1}); refusing it")
            active.discard(id(n))
            sizes[id(n)] = total
            return total

        size(node, 0)
        return loader.construct_document(node)
    finally:
        loader.dispose()
