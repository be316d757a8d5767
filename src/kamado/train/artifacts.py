"""The pretrain stage's artifact folder: the one way other stages (tune, eval, report) read it.

Layout::

    metrics.jsonl       one record per logged step (loss, lr, tokens, tokens_per_s, mfu, ...) and val_loss records
    checkpoints/        training checkpoints (resumable)
    hf/                 the trained model in Hugging Face format
    pretrain.json       the result (:class:`TrainCounts` plus ``extra`` and ``preset``)
    manifest.json       counts (:class:`TrainCounts`)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kamado.stage import artifact_dir

RESULT = "pretrain.json"
METRICS = "metrics.jsonl"
HF = "hf"


@dataclass
class TrainCounts:
    """The pretrain stage's manifest counts (a training result)."""

    params: int | None = None
    trainable_params: int | None = None
    steps: int | None = None
    tokens: int | None = None  # tokens trained on
    final_loss: float | None = None
    first_val_loss: float | None = None
    val_loss: float | None = None
    tokens_per_s: float | None = None
    tflops: float | None = None
    mfu: float | None = None
    peak_tflops: float | None = None
    wall_s: float | None = None
    world_size: int | None = None
    precision: str | None = None
    resumed_from: int | None = None
    hf: str = HF
    metrics: str = METRICS

    @classmethod
    def from_result(cls, res: dict[str, Any]) -> TrainCounts:
        """From a training result dict (floats rounded to 5 places); unknown keys are ignored."""
        known = {f.name for f in fields(cls)} - {"hf", "metrics"}
        return cls(**{k: (round(v, 5) if isinstance(v, float) else v) for k, v in res.items() if k in known})

    def to_counts(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_counts(cls, counts: dict[str, Any]) -> TrainCounts:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in counts.items() if k in known})


@dataclass
class TrainArtifact:
    """A pretrain stage folder (finished, or still training: ``metrics.jsonl`` alone is readable)."""

    path: Path
    counts: TrainCounts
    result: dict[str, Any] = field(default_factory=dict)  # pretrain.json ({} until training finished)

    @classmethod
    def open(cls, path: Path | str) -> TrainArtifact:
        """Read a pretrain folder; a missing folder or one with neither metrics nor a model is a clear error."""
        p, counts = artifact_dir(path, "pretrain", (METRICS, RESULT, f"{HF}/config.json"))
        result: dict[str, Any] = {}
        if (p / RESULT).is_file():
            try:
                result = json.loads((p / RESULT).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                result = {}
        tc = TrainCounts.from_counts(counts or (result if isinstance(result, dict) else {}))
        return cls(p, tc, result if isinstance(result, dict) else {})

    @property
    def hf_dir(self) -> Path:
        """The exported Hugging Face model folder."""
        return self.path / (self.counts.hf or HF)

    def has_model(self) -> bool:
        return (self.hf_dir / "config.json").is_file()

    @property
    def metrics_path(self) -> Path:
        return self.path / (self.counts.metrics or METRICS)

    def metrics(self) -> list[dict[str, Any]]:
        """Every record of ``metrics.jsonl`` (step records and validation records)."""
        from kamado.jsonl import read_records

        return read_records(self.metrics_path)

    def tokens_seen(self, records: list[dict[str, Any]] | None = None) -> int | None:
        """Tokens trained on: the result's count, else the last logged ``tokens``."""
        if self.counts.tokens is not None:
            return int(self.counts.tokens)
        for r in reversed(records if records is not None else self.metrics()):
            if isinstance(r.get("tokens"), int | float) and "loss" in r:
                return int(r["tokens"])
        return None
