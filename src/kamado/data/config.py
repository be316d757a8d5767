"""Config of the data stage (token packing) and of the ja/en mixture used by the trainer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kamado.config import StrictModel


class PackConfig(StrictModel):
    """Tokenize clean shards into memory-mapped token files, one set per source."""

    workers: int = Field(2, ge=1, description="Tokenizer processes (local) or Ray tasks (ray) working at once "
                         "(1 or more; the pack is the same for any number).")
    append_eos: bool = Field(True, description="End every document with the EOS token.")
    valid_fraction: float = Field(0.01, ge=0.0, lt=1.0, description="Share of each source's documents held out "
                                  "for the validation loss (0 to below 1; 0.01 = 1%).")
    prepend_bos: bool = Field(False, description="Also start every document with the BOS token.")
    executor: Literal["local", "ray"] = Field("local", description="local (a process pool on this machine) or ray "
                                              "(a Ray pool, e.g. on a cluster).")
    batch_chars: int = Field(1_000_000, description="Characters per tokenization job sent to a worker.")


class MixtureStage(StrictModel):
    """Token shares per source from ``start`` (fraction of training, 0..1) on."""

    start: float = 0.0
    weights: dict[str, float]


class MixtureConfig(StrictModel):
    """Per-source token shares, optionally changing by training progress.

    Weight keys are source names of the pack (``ja_web``) or languages (``ja``: split among the
    language's sources by size); shares are of tokens, since every sample is a ``seq_len`` window.
    """

    weights: dict[str, float] | None = None  # used when no stages are given; None = by size
    stages: list[MixtureStage] | None = None
    max_epochs: float = 10.0  # warn (plan) / stop repeating a source beyond this many epochs

    @model_validator(mode="after")
    def _check_stages(self) -> MixtureConfig:
        for where, w in [("weights", self.weights), *((f"stages[{i}].weights", s.weights)
                                                    for i, s in enumerate(self.stages or []))]:
            if w is None:
                continue
            bad = {k: v for k, v in w.items() if v < 0}
            if bad:
                raise ValueError(f"{where}: weights must be >= 0 (got {bad})")
            if not any(v > 0 for v in w.values()):
                raise ValueError(f"{where}: at least one weight must be positive")
        if self.stages:
            starts = [s.start for s in self.stages]
            if starts[0] != 0.0:
                raise ValueError(f"stages: the first stage must start at 0.0 (got {starts[0]})")
            if any(b <= a for a, b in zip(starts, starts[1:], strict=False)) or starts[-1] >= 1.0:
                raise ValueError(f"stages: starts must increase and stay below 1.0 (got {starts})")
        if self.max_epochs <= 0:
            raise ValueError("max_epochs must be positive")
        return self
