"""The pretraining stage end to end on a real (small) tokenizer and pack, via the ``kamado pretrain`` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _kamado(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, KAMADO_QUIET="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               KAMADO_CACHE=str(ROOT / ".cache" / "kamado"))
    return subprocess.run([sys.executable, "-m", "kamado.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_pretrain_cli_two_ranks_then_resume_and_export(tmp_path: Path, pack: tuple[Path, Path]) -> None:
    pk, tok = pack
    out = tmp_path / "pt"
    args = ["pretrain", "--pack", str(pk), "--tokenizer", str(tok), "--out", str(out), "--preset", "tiny",
            "--set", "model.overrides.num_hidden_layers=2", "--set", "train.seq_len=64", "--set",
            "train.batch_size=4", "--set", "train.ckpt_every=4", "--set", "train.eval_batches=2"]
    r = _kamado(*args, "--steps", "8", "--nproc", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in recs if "loss" in x]
    assert [x["step"] for x in steps] == list(range(1, 9))
    assert all(k in steps[-1] for k in ("tokens_per_s", "mfu", "tflops", "mix/ja", "mix/en"))
    assert any("val_loss" in x for x in recs)
    man = json.loads((out / "manifest.json").read_text())
    assert man["counts"]["world_size"] == 2 and man["counts"]["steps"] == 8
    cfg = json.loads((out / "hf" / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["vocab_size"] >= 3000
    assert (out / "hf" / "tokenizer.model").is_file()
    # more steps on one process: a different world size cannot resume the 2-rank sampler state
    r = _kamado(*args, "--steps", "12", cwd=tmp_path)
    assert r.returncode == 2 and "ranks" in r.stderr
    r = _kamado(*args, "--steps", "12", "--nproc", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    man = json.loads((out / "manifest.json").read_text())
    assert man["counts"]["resumed_from"] == 8 and man["counts"]["steps"] == 12
    steps2 = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in steps2 if "loss" in x] == list(range(1, 13))
    # the export loads offline with its tokenizer and generates
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(str(out / "hf"))
    t = AutoTokenizer.from_pretrained(str(out / "hf"))
    ids = t("日本の首都は", return_tensors="pt").input_ids
    gen = m.generate(ids, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] == ids.shape[1] + 5
    # export on demand
    r = _kamado("pretrain", "--out", str(out), "--tokenizer", str(tok), "--export", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
