"""scripts/gpu_check.sh --dry-run: the GPU check's steps (bench, a short pretrain, a short eval) on CPU."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    r = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh"), "--dry-run", "--out", str(tmp_path / "gc")],
                       cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    table = r.stdout[r.stdout.index("kamado GPU check"):]
    for step in ("bench", "pretrain", "eval"):
        assert f"| {step}" in table
    assert "FAILED" not in table and "tok/s" in table and "acc" in table
