"""The whole recipe end to end through the CLI, on real data: every stage real, then a skipping rerun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MICRO = Path(__file__).resolve().parent / "data" / "micro.yaml"
STAGES = ["corpus", "tokenizer", "data", "pretrain", "tune", "eval", "report"]


def kamado(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "kamado.cli", *args], capture_output=True, text=True,
                       timeout=1200, env={**os.environ, **(env or {})})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


@pytest.mark.slow
def test_micro_recipe_end_to_end(tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "run"
    kamado("run", str(MICRO), "--out", str(out), env={"KAMADO_DATA_ROOT": str(data_root)})
    for s in STAGES:
        man = json.loads((out / s / "manifest.json").read_text())
        assert man["status"] == "complete" and man["stage"] == s and man["outputs"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<img" in html or "<svg" in html

    # corpus accounting holds for every source
    for src in json.loads((out / "corpus" / "sources.json").read_text()):
        for stats in (out / "corpus").glob(f"{src['name']}/**/stats.json"):
            s = json.loads(stats.read_text())
            assert s["input"] == s["kept"] + s["rejected"] + s["errors"], stats

    # pretraining logged every step, and the HF export loads offline and generates
    recs = [json.loads(line) for line in (out / "pretrain" / "metrics.jsonl").read_text().splitlines() if line]
    steps = [r for r in recs if "loss" in r and "step" in r]
    assert len(steps) >= 30 and all("tokens_per_s" in r and "mfu" in r for r in steps)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = out / "pretrain" / "hf"
    model, tok = AutoModelForCausalLM.from_pretrained(hf), AutoTokenizer.from_pretrained(hf)
    ids = tok("日本の首都は", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]

    results = json.loads((out / "eval" / "results.json").read_text())["models"]
    assert {"pretrain", "tune/full", "tune/lora"} <= set(results)

    # a rerun skips every stage; a changed eval setting redoes only eval and report
    p = kamado("run", str(MICRO), "--out", str(out), env={"KAMADO_DATA_ROOT": str(data_root)})
    assert p.stderr.count("up to date, skipped") == len(STAGES), p.stderr[-2000:]
    shutil.rmtree(out / "report")
    p = kamado("run", str(MICRO), "--out", str(out), "--set", "eval.limit=8",
               env={"KAMADO_DATA_ROOT": str(data_root)})
    assert p.stderr.count("up to date, skipped") == 5, p.stderr[-2000:]
