"""The stage interface: every stage is a function ``run(cfg, ctx) -> counts`` over artifact directories.

``kamado run`` (see ``runner.py``) builds a :class:`StageContext` for each stage, calls the stage's
function, then writes the manifest. The same function backs the stage's own CLI subcommand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageContext:
    """Where a stage reads and writes, and the run-wide settings it needs."""

    name: str
    out: Path  # this stage's artifact directory (exists, may hold a partial earlier attempt)
    inputs: dict[str, Path] = field(default_factory=dict)  # upstream stage name -> artifact dir
    data_root: Path | None = None
    seed: int = 1234
    run_dir: Path | None = None
    cache_dir: Path | None = None  # for tool scratch files (Ray, inductor, HF); inside the run
    quiet: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def input(self, stage: str) -> Path:
        """The artifact directory of an upstream stage (clear error when the recipe lacks it)."""
        if stage not in self.inputs:
            from kamado.config import KamadoError

            raise KamadoError(f"stage {self.name!r} needs the output of stage {stage!r}, which this run lacks")
        return self.inputs[stage]
