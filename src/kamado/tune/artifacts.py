"""The tune stage's artifact folder: the one way other stages (eval, report) read it.

Layout::

    data.json                   instruction data statistics
    <method>/metrics.jsonl      training curve of each method (full, lora)
    <method>/result.json        the method's summary (written when it finished)
    full/hf/                    the fully fine-tuned model (Hugging Face format)
    lora/adapter/, lora/hf/     the LoRA adapter, and the model with it merged
    tune.json                   {"base", "data", "chat_template", "methods": {method: summary}}
    manifest.json               counts (:class:`TuneCounts`)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kamado.stage import artifact_dir

SUMMARY = "tune.json"
METHODS = ("full", "lora")
_PER_METHOD = ("val_loss_before", "val_loss_after", "final_train_loss", "trainable_pct", "wall_s", "tokens_per_s")


@dataclass
class MethodCounts:
    """The manifest numbers of one tuning method."""

    val_loss_before: float | None = None
    val_loss_after: float | None = None
    final_train_loss: float | None = None
    trainable_pct: float | None = None
    wall_s: float | None = None
    tokens_per_s: float | None = None


@dataclass
class TuneCounts:
    """The tune stage's manifest counts: data sizes, then ``<method>_<count>`` per method."""

    train_examples: int = 0
    valid_examples: int = 0
    train_target_tokens: int = 0
    methods: dict[str, MethodCounts] = field(default_factory=dict)

    @classmethod
    def of(cls, data_stats: dict[str, Any], methods: dict[str, dict[str, Any]]) -> TuneCounts:
        """From the data statistics and each method's summary (``tune.json``'s parts)."""
        return cls(int(data_stats.get("train_examples", 0)), int(data_stats.get("valid_examples", 0)),
                   int(data_stats.get("train_target_tokens", 0)),
                   {m: MethodCounts(**{k: r.get(k) for k in _PER_METHOD}) for m, r in methods.items()})

    def to_counts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"train_examples": self.train_examples, "valid_examples": self.valid_examples,
                               "train_target_tokens": self.train_target_tokens}
        for m, mc in self.methods.items():
            out |= {f"{m}_{k}": getattr(mc, k) for k in _PER_METHOD}
        return out

    @classmethod
    def from_counts(cls, counts: dict[str, Any]) -> TuneCounts:
        c = cls(**{k: int(counts.get(k) or 0) for k in ("train_examples", "valid_examples", "train_target_tokens")})
        for k, v in counts.items():
            for p in _PER_METHOD:
                if k.endswith("_" + p) and k[: -len(p) - 1]:
                    setattr(c.methods.setdefault(k[: -len(p) - 1], MethodCounts()), p, v)
        return c


@dataclass
class TuneArtifact:
    """A tune stage folder: the comparison summary (when finished) and each method's model and curve."""

    path: Path
    counts: TuneCounts
    summary: dict[str, Any] = field(default_factory=dict)  # tune.json ({} until the stage finished)

    @classmethod
    def open(cls, path: Path | str) -> TuneArtifact:
        """Read a tune folder; a missing folder or one without any method's output is a clear error."""
        p, counts = artifact_dir(path, "tune", (SUMMARY, *METHODS))
        summary: dict[str, Any] = {}
        if (p / SUMMARY).is_file():
            try:
                summary = json.loads((p / SUMMARY).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                summary = {}
        return cls(p, TuneCounts.from_counts(counts), summary if isinstance(summary, dict) else {})

    @property
    def methods(self) -> dict[str, dict[str, Any]]:
        """Each finished method's summary (trainable params, lr, losses before/after, ...)."""
        m = self.summary.get("methods")
        return m if isinstance(m, dict) else {}

    @property
    def data(self) -> dict[str, Any]:
        d = self.summary.get("data")
        return d if isinstance(d, dict) else {}

    def method_names(self) -> list[str]:
        """Methods with a summary, else those whose folder holds a training curve."""
        return list(self.methods) or [m for m in METHODS if (self.path / m / "metrics.jsonl").is_file()]

    def hf_dir(self, method: str) -> Path:
        """The Hugging Face model folder of ``method`` (LoRA: merged into the base)."""
        rel = (self.methods.get(method) or {}).get("hf") or f"{method}/hf"
        return self.path / rel

    def metrics_path(self, method: str) -> Path:
        return self.path / method / "metrics.jsonl"
