"""The recipe: one YAML file that names every stage's settings, validated before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, create_model, field_validator

from kamado.config import ConfigError, KamadoError, StrictModel, format_validation_error, load_yaml
from kamado.folders import folder_name
from kamado.stage import DEFAULT_SEED, STAGE_NAMES, STAGES


class RecipeBase(StrictModel):
    """A whole run: from raw text to a report. Stages left out are not run.

    One optional section per stage of the registry (:data:`kamado.stage.STAGES`), each validated by
    that stage's config model.
    """

    name: str = "run"  # the default run folder is runs/<name>: folder names joined by "/" (experiment variants)
    seed: int = DEFAULT_SEED
    data_root: str | None = None

    @field_validator("name")
    @classmethod
    def _name_is_folders(cls, v: str) -> str:
        try:
            for part in v.split("/"):
                folder_name(part, "recipe name part")
        except KamadoError as e:
            raise ValueError(str(e)) from None
        return v

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
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: invalid recipe\n" + format_validation_error(e)) from None
    problems = cross_check(recipe)
    if problems:
        raise ConfigError(f"{source}: invalid recipe\n" + "\n".join(problems))
    return recipe


# upstream stages a stage cannot run without (the others in StageSpec.deps are read when present)
REQUIRED = {"tokenizer": ("corpus",), "data": ("corpus", "tokenizer"), "pretrain": ("data", "tokenizer")}


def cross_check(recipe: RecipeBase) -> list[str]:
    """Checks between sections (each section checked its own values already); one line per problem,
    naming the YAML path: stages whose required upstream is missing, mixture and tokenizer weights
    naming no corpus source or language, a sequence longer than the model's context."""
    problems: list[str] = []
    corpus = getattr(recipe, "corpus", None)
    if corpus is not None:
        names = [s.name for s in corpus.sources]
        known = set(names) | {s.lang for s in corpus.sources}
        hint = f"corpus sources: {', '.join(names)}; languages: {', '.join(sorted(known - set(names)))}"
        weighted: list[tuple[str, dict[str, float] | None]] = []
        tok = getattr(recipe, "tokenizer", None)
        if tok is not None:
            weighted.append(("tokenizer.weights", tok.weights))
        pre = getattr(recipe, "pretrain", None)
        if pre is not None:
            weighted.append(("pretrain.mixture.weights", pre.mixture.weights))
            weighted += [(f"pretrain.mixture.stages[{i}].weights", st.weights)
                         for i, st in enumerate(pre.mixture.stages or [])]
        for where, w in weighted:
            for key in w or {}:
                if key not in known:
                    problems.append(f"{where}.{key}: not a corpus source or language ({hint})")
    pre = getattr(recipe, "pretrain", None)
    if pre is not None and pre.init_from is None:  # init_from: the context is the base model's (checked at build)
        from kamado.model.presets import PRESETS  # light: no torch/transformers import

        ctx_len = pre.model.overrides.get("max_position_embeddings",
                                          PRESETS[pre.model.preset]["max_position_embeddings"])
        if pre.train.seq_len > ctx_len:
            problems.append(f"pretrain.train.seq_len: {pre.train.seq_len} exceeds the model's context {ctx_len} "
                            "(set pretrain.model.overrides.max_position_embeddings)")
    if pre is not None:
        if pre.train.batch_size % (pre.train.grad_accum * pre.train.nproc):
            problems.append(f"pretrain.train.batch_size: {pre.train.batch_size} is not a multiple of grad_accum × "
                            f"nproc ({pre.train.grad_accum} × {pre.train.nproc})")
    return problems


def missing_upstream(recipe: RecipeBase) -> list[str]:
    """Stages whose required upstream section the recipe lacks (checked when a whole recipe is run; a
    recipe fragment read by one stage's subcommand, e.g. ``kamado pretrain --recipe``, may lack them)."""
    problems: list[str] = []
    stages = recipe.stages()
    for stage in stages:
        for dep in REQUIRED.get(stage, ()):
            if dep not in stages:
                problems.append(f"{stage}: needs the {dep!r} section (its input), which the recipe lacks")
    tune = getattr(recipe, "tune", None)
    if tune is not None and tune.base is None and "pretrain" not in stages:
        problems.append("tune: needs a pretrain section or tune.base (the model to tune)")
    return problems


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
    try:
        node[parts[-1]] = load_yaml(value, f"--set {key.strip()}")
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {override!r}: the value {value!r} is not valid YAML "
                          f"({getattr(e, 'problem', None) or e}); quote it, e.g. --set '{key}=\"{value}\"'") from None


def read_recipe_data(path: Path | str, overrides: list[str] | None = None) -> dict[str, Any]:
    """The recipe file as a mapping, with ``a.b.c=value`` overrides applied; clear errors for a missing
    file, bad YAML or a file that is not a mapping."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such recipe file")
    try:
        data = load_yaml(p.read_text(encoding="utf-8"), str(p))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a recipe must be a YAML mapping, got {type(data).__name__}")
    for ov in overrides or []:
        apply_override(data, ov)
    return data


def load_recipe(path: Path | str, overrides: list[str] | None = None) -> RecipeBase:
    """Read and validate a recipe file (see :func:`read_recipe_data`)."""
    return parse_recipe(read_recipe_data(path, overrides), str(path))


def check_inputs(recipe: RecipeBase, recipe_dir: Path | None, data_root: Path | None) -> None:
    """Resolve every input the recipe names, so a missing file fails before any work starts."""
    from kamado import catalog

    problems = []

    def _check(where: str, name: str) -> None:
        try:
            catalog.resolve(name, data_root, recipe_dir)
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
    tok = getattr(recipe, "tokenizer", None)
    if tok is not None and tok.extend is not None:
        _check("tokenizer.extend.base", tok.extend.base)  # the base tokenizer an extended one starts from
    pre = getattr(recipe, "pretrain", None)
    if pre is not None and pre.init_from:
        n = len(problems)
        _check("pretrain.init_from", pre.init_from)
        if len(problems) > n:
            problems[-1] += " (a Hugging Face LLaMA model folder: train one first, e.g. `make demo` writes runs/tiny/pretrain/hf)"
    if problems:
        raise ConfigError("recipe inputs missing:\n" + "\n".join(problems))
