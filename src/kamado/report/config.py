"""Config of the report stage."""

from __future__ import annotations

from kamado.config import StrictModel


class ReportConfig(StrictModel):
    """A self-contained HTML report with loss curves and results tables."""

    title: str | None = None
