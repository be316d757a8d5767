"""``kamado bench`` measures the real engine and reports tokens/s, TFLOP/s and MFU per precision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # 30 s: `kamado bench` subprocess (test-fast run on a loaded box)
def test_bench_json(tmp_path: Path) -> None:
    env = dict(os.environ, KAMADO_QUIET="1", KAMADO_CACHE=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "kamado.cli", "bench", "--preset", "tiny", "--seq-len", "32",
                        "--batch", "2", "--vocab", "512", "--precision", "fp32,bf16", "--steps", "3", "--json",
                        "--no-peaks"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    rows = {x["precision"]: x for x in out["results"]}
    assert set(rows) == {"fp32", "bf16"}
    for x in rows.values():
        assert x["tokens_per_s"] > 0 and x["tflops"] > 0 and 0 < x["mfu"] < 1 and x["steps_timed"] == 1
        assert x["seq_len"] == 32 and x["batch"] == 2
    assert rows["bf16"]["peak_tflops"] > rows["fp32"]["peak_tflops"]  # each precision against its own peak
    assert (tmp_path / "peak_flops.json").is_file()  # the CPU probe is cached


def test_bench_rejects_unknown_precision() -> None:
    r = subprocess.run([sys.executable, "-m", "kamado.cli", "bench", "--precision", "fp64"], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, KAMADO_QUIET="1"))
    assert r.returncode == 2 and "fp64" in r.stderr
