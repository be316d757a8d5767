"""The report stage's artifact folder: ``report.html`` and its counts.

Layout::

    report.html     the self-contained report (also copied to ``<run>/report.html``)
    manifest.json   counts (:class:`ReportCounts`)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from kamado.stage import artifact_dir

HTML = "report.html"


@dataclass
class ReportCounts:
    """Sections written, those whose inputs were missing, plots and size."""

    sections: int = 0
    sections_missing: int = 0
    plots: int = 0
    bytes: int = 0
    missing: str = ""  # comma-separated anchors of the sections shown as notes

    def to_counts(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_counts(cls, counts: dict[str, Any]) -> ReportCounts:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in counts.items() if k in known})


@dataclass
class ReportArtifact:
    path: Path
    counts: ReportCounts

    @classmethod
    def open(cls, path: Path | str) -> ReportArtifact:
        """Read a report folder; a missing folder or ``report.html`` is a clear error naming it."""
        p, counts = artifact_dir(path, "report", (HTML,))
        return cls(p, ReportCounts.from_counts(counts))

    @property
    def html(self) -> Path:
        return self.path / HTML
