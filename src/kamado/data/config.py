"""Config of the data stage (token packing) and of the ja/en mixture used by the trainer."""

from __future__ import annotations

from kamado.config import StrictModel


class PackConfig(StrictModel):
    """Tokenize clean shards into memory-mapped token files, one set per source."""

    workers: int = 2
    append_eos: bool = True
    valid_fraction: float = 0.01  # documents held out per source for validation loss


class MixtureStage(StrictModel):
    """Token shares per source from ``start`` (fraction of training, 0..1) on."""

    start: float = 0.0
    weights: dict[str, float]


class MixtureConfig(StrictModel):
    """Per-source token shares, optionally changing by training progress."""

    weights: dict[str, float] | None = None  # used when no stages are given; None = by size
    stages: list[MixtureStage] | None = None
    max_epochs: float = 10.0  # warn (plan) / stop repeating a source beyond this many epochs
