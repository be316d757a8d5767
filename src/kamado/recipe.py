"""The recipe: one YAML file that names every stage's settings, validated before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, create_model

from kamado.config import ConfigError, KamadoError, StrictModel, format_validation_error
from kamado.stage import DEFAULT_SEED, STAGE_NAMES, STAGES


class RecipeBase(StrictModel):
    """A whole run: from raw text to a report. Stages left out are not run.

    One optional section per stage of the registry (:data:`kamado.stage.STAGES`), each validated by
    that stage's config model.
    """

    name: str = "run"
    seed: int = DEFAULT_SEED
    data_root: str | None = None

    def stages(self) -> list[str]:
        """Names of the stages this recipe runs, in order."""
        return [s for s in STAGE_NAMES if getattr(self, s) is not None]

    def stage_config(self, stage: str) -> StrictModel:
        cfg = getattr(self, stage, None)
        if cfg is None:
            raise KamadoError(f"the recipe has no {stage!r} section")
        return cfg


Recipe: type[RecipeBase] = create_model(  # type: ignore[call-overload]
    "Recipe", __base__=RecipeBase, __module__=__name__,
    **{s.name: (s.config_class() | None, None) for s in STAGES},
)


def parse_recipe(data: Any, source: str = "<recipe>", overrides: list[str] | None = None) -> RecipeBase:
    """Validate a recipe mapping (after ``a.b.c=value`` overrides); errors name the YAML path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a recipe must be a YAML mapping, got {type(data).__name__}")
    for ov in overrides or []:
        apply_override(data, ov)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: invalid recipe\n" + format_validation_error(e)) from None


def apply_override(data: dict, override: str) -> None:
    """Set ``a.b.c=value`` in a nested mapping; the value is parsed as YAML (numbers, lists, …)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected KEY.PATH=VALUE")
    key, value = override.split("=", 1)
    node = data
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {p} is not a mapping")
    node[parts[-1]] = yaml.safe_load(value)


def load_recipe(path: Path | str, overrides: list[str] | None = None) -> RecipeBase:
    """Read and validate a recipe file; a missing file or bad YAML is a clear error."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such recipe file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
    return parse_recipe(data, str(p), overrides)


def check_inputs(recipe: RecipeBase, recipe_dir: Path | None, data_root: Path | None) -> None:
    """Resolve every input the recipe names, so a missing file fails before any work starts."""
    from kamado import registry

    problems = []

    def _check(where: str, name: str) -> None:
        try:
            registry.resolve(name, data_root, recipe_dir)
        except KamadoError as e:
            problems.append(f"{where}: {e}")

    if recipe.corpus:
        for i, src in enumerate(recipe.corpus.sources):
            for j, name in enumerate(src.inputs):
                _check(f"corpus.sources[{i}].inputs[{j}]", name)
        chain = recipe.corpus.chain
        if chain.endswith((".yaml", ".yml")):
            cp = Path(chain) if Path(chain).is_absolute() or recipe_dir is None else recipe_dir / chain
            if not cp.is_file():
                problems.append(f"corpus.chain: no such file ({cp})")
    if recipe.tune:
        for j, name in enumerate(recipe.tune.data):
            _check(f"tune.data[{j}]", name)
    if problems:
        raise ConfigError("recipe inputs missing:\n" + "\n".join(problems))
