"""The stage registry and the stage interface.

Every stage is a function ``run(cfg, ctx) -> counts`` over artifact directories. :data:`STAGES` is the
one list of stages: their order, config model, upstream stages, ``run`` function and artifact reader.
The recipe schema, the runner, every stage subcommand and the report read it from here.

This module is part of the core: it names stage modules as ``"module:attribute"`` strings and imports
them only when asked, so the core imports no stage package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kamado.config import KamadoError

DEFAULT_SEED = 1234


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class StageSpec:
    """One stage: its name, what it reads, and where its config, ``run`` and artifact reader live."""

    name: str
    deps: tuple[str, ...]  # upstream stages whose artifact directories it reads
    config: str  # "module:Class" of its pydantic config model (a section of the recipe)
    run: str  # "module:function" with signature run(cfg, ctx) -> counts
    artifact: str  # "module:Class" reading its artifact directory (``Class.open(path)``)
    help: str = ""
    external: Callable[[Any], list[str]] | None = None  # names of files it reads from outside the run

    def config_class(self) -> type:
        """The stage's config model."""
        return _load(self.config)

    def run_function(self) -> Callable[[Any, StageContext], dict[str, Any]]:
        """The stage's ``run(cfg, ctx)``."""
        return _load(self.run)

    def artifact_class(self) -> Any:
        """The reader of the stage's artifact directory."""
        return _load(self.artifact)


def _corpus_external(cfg: Any) -> list[str]:
    names = [n for s in cfg.sources for n in s.inputs]
    if cfg.chain.endswith((".yaml", ".yml")):
        names.append(cfg.chain)  # an edited filter-chain file changes the corpus stage
    return names


def _tokenizer_external(cfg: Any) -> list[str]:
    return [cfg.extend.base] if cfg.extend is not None else []  # the base of an extended tokenizer


def _pretrain_external(cfg: Any) -> list[str]:
    return [cfg.init_from] if cfg.init_from else []  # the model continued pretraining starts from


def _tune_external(cfg: Any) -> list[str]:
    return list(cfg.data)


STAGES: tuple[StageSpec, ...] = (
    StageSpec("corpus", (), "kamado.corpus.config:CorpusConfig", "kamado.corpus.stage:run",
              "kamado.corpus.artifacts:CorpusArtifact", "clean and deduplicate raw text",
              external=_corpus_external),
    StageSpec("tokenizer", ("corpus",), "kamado.tokenizer.config:TokenizerConfig", "kamado.tokenizer.stage:run",
              "kamado.tokenizer.artifacts:TokenizerArtifact", "train a SentencePiece tokenizer",
              external=_tokenizer_external),
    StageSpec("data", ("corpus", "tokenizer"), "kamado.data.config:PackConfig", "kamado.data.stage:run",
              "kamado.data.artifacts:PackArtifact", "pack token shards per source"),
    StageSpec("pretrain", ("data", "tokenizer"), "kamado.train.config:PretrainConfig", "kamado.train.pretrain:run",
              "kamado.train.artifacts:TrainArtifact", "pretrain a LLaMA model", external=_pretrain_external),
    StageSpec("tune", ("pretrain", "tokenizer"), "kamado.tune.config:TuneConfig", "kamado.tune.stage:run",
              "kamado.tune.artifacts:TuneArtifact", "instruction-tune (full and LoRA)",
              external=_tune_external),
    StageSpec("eval", ("pretrain", "tune", "data", "tokenizer"), "kamado.eval.config:EvalConfig",
              "kamado.eval.stage:run", "kamado.eval.artifacts:EvalArtifact", "evaluate the models"),
    StageSpec("report", ("corpus", "tokenizer", "data", "pretrain", "tune", "eval"),
              "kamado.report.config:ReportConfig", "kamado.report.stage:run",
              "kamado.report.artifacts:ReportArtifact", "write the HTML report"),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def artifact_dir(path: Path | str, stage: str, needs: tuple[str, ...] = ()) -> tuple[Path, dict[str, Any]]:
    """Check that ``path`` is a ``stage`` artifact folder holding at least one of ``needs``; returns the
    folder and its manifest counts (empty when the stage has not finished: readers accept partial folders).

    A missing folder, or one without any of ``needs``, is a :class:`KamadoError` naming the folder.
    """
    from kamado.manifest import read_manifest

    p = Path(path)
    if not p.is_dir():
        raise KamadoError(f"{p}: no {stage} stage folder here (run the {stage} stage first)")
    if needs and not any((p / n).exists() for n in needs):
        raise KamadoError(f"{p}: not a complete {stage} stage folder (it lacks {' or '.join(needs)}); "
                          f"re-run the {stage} stage")
    man = read_manifest(p)
    counts = (man or {}).get("counts")
    return p, counts if isinstance(counts, dict) else {}


def stage_spec(name: str) -> StageSpec:
    """The registry entry of stage ``name`` (a clear error listing the stages otherwise)."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KamadoError(f"unknown stage {name!r} (stages: {', '.join(STAGE_NAMES)})")


@dataclass
class StageContext:
    """Where a stage reads and writes, and the run-wide settings it needs."""

    name: str
    out: Path  # this stage's artifact directory (exists, may hold a partial earlier attempt)
    inputs: dict[str, Path] = field(default_factory=dict)  # upstream stage name -> artifact dir
    data_root: Path | None = None
    seed: int = DEFAULT_SEED
    run_dir: Path | None = None
    cache_dir: Path | None = None  # for tool scratch files (Ray, inductor, HF); inside the run
    quiet: bool = False
    recipe_dir: Path | None = None  # relative paths in the config are taken from here

    def input(self, stage: str) -> Path:
        """The artifact directory of an upstream stage (clear error when the recipe lacks it)."""
        if stage not in self.inputs:
            raise KamadoError(f"stage {self.name!r} needs the output of stage {stage!r}, which this run lacks")
        return self.inputs[stage]

    def artifact(self, stage: str) -> Any:
        """The typed reader of an upstream stage's artifact directory."""
        return stage_spec(stage).artifact_class().open(self.input(stage))


def run_stage_alone(name: str, cfg: Any, out: Path, inputs: dict[str, Path] | None = None, *,
                    seed: int = DEFAULT_SEED, data_root: Path | None = None, recipe_dir: Path | None = None,
                    quiet: bool = False) -> dict[str, Any]:
    """Run one stage outside a recipe (a stage subcommand), the same ``run`` as ``kamado run`` calls.

    Writes the stage's manifest, so the folder is a finished artifact like one inside a run. Tools keep
    their scratch files in their own default places (``cache_dir`` is None: nothing extra under ``out``).
    """
    import time

    from kamado import folders
    from kamado.manifest import write_manifest

    spec = stage_spec(name)
    folders.mark(out, "stage", stage=name)  # a user's non-empty folder is refused before any change
    ctx = StageContext(name=name, out=out, inputs=dict(inputs or {}), data_root=data_root, seed=seed,
                       run_dir=out, cache_dir=None, quiet=quiet, recipe_dir=recipe_dir)
    t0 = time.perf_counter()
    counts = spec.run_function()(cfg, ctx) or {}
    write_manifest(out, stage=name, config=cfg.model_dump(mode="json"),
                   inputs={f"stage:{k}": str(v) for k, v in (inputs or {}).items()}, counts=counts,
                   timings={"wall_s": round(time.perf_counter() - t0, 3)}, extra={"seed": seed})
    return counts
