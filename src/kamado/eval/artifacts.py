"""The eval stage's artifact folder: written by :meth:`EvalArtifact.write`, read by :meth:`EvalArtifact.open`.

Layout::

    results.json                    {"models": {model: {task: {metric: value}}}, "tasks", "skipped_models",
                                     "settings", "details": {model: "details/<model>"}}
    details/<model>/<task>.jsonl    per-example predictions
    models/<model>/results.json     each finished model (an interrupted stage resumes from these)
    manifest.json                   counts (:meth:`EvalArtifact.to_counts`)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.jsonl import to_json_safe
from kamado.stage import artifact_dir

RESULTS = "results.json"
# the metrics that go into the manifest counts (the full set is in results.json)
MAIN_METRICS = ("acc", "acc_norm", "mc1", "mc2", "pearson", "spearman", "exact_match", "char_f1",
                "token_ppl_ja", "token_ppl_en", "char_ppl_ja", "char_ppl_en", "bpc_ja", "bpc_en", "token_ppl")


def safe_name(name: str) -> str:
    """A model name usable as a folder name (``tune/full`` -> ``tune-full``)."""
    return name.replace("/", "-").replace("\\", "-").strip(".-") or "model"


@dataclass
class EvalArtifact:
    """An eval folder: every model's results per task, and how they were obtained."""

    path: Path
    models: dict[str, dict[str, dict[str, Any]]]  # model -> task -> metric -> value
    tasks: list[str] = field(default_factory=list)
    skipped_models: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)  # model -> details folder (relative)
    manifest_counts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path | str) -> EvalArtifact:
        """Read ``results.json``; a missing folder or file, or one without models, is a clear error."""
        p, counts = artifact_dir(path, "eval", (RESULTS,))
        try:
            doc = json.loads((p / RESULTS).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise KamadoError(f"{p / RESULTS}: unreadable ({e}); re-run the eval stage") from None
        models = doc.get("models") if isinstance(doc, dict) else None
        if not isinstance(models, dict):
            raise KamadoError(f"{p / RESULTS}: no 'models' mapping; re-run the eval stage")
        return cls(p, models, list(doc.get("tasks") or []), list(doc.get("skipped_models") or []),
                   dict(doc.get("settings") or {}), dict(doc.get("details") or {}), counts)

    def write(self) -> None:
        """Write ``results.json`` (NaN/inf as null)."""
        from kamado.manifest import write_json_atomic

        write_json_atomic(self.path / RESULTS, {
            "models": to_json_safe(self.models, nonfinite="null"), "tasks": self.tasks, "skipped_models": self.skipped_models,
            "settings": self.settings, "details": self.details or {n: f"details/{safe_name(n)}" for n in self.models}})

    def to_counts(self) -> dict[str, Any]:
        """Manifest counts: numbers of models and tasks, and ``<model>.<task>.<metric>`` headline metrics."""
        counts: dict[str, Any] = {"models": len(self.models), "tasks": len(self.tasks)}
        for name, per in self.models.items():
            for task, mets in per.items():
                for k in MAIN_METRICS:
                    if isinstance(mets, dict) and mets.get(k) is not None:
                        counts[f"{name}.{task}.{k}"] = round(float(mets[k]), 6)
        return counts

    def other_files(self) -> list[str]:
        """Names of the folder's other entries (details, per-model results)."""
        return sorted(q.name for q in self.path.iterdir() if q.name not in (RESULTS, "manifest.json"))
