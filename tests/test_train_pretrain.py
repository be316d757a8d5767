"""The pretraining stage end to end on a real (small) tokenizer and pack, via the ``kamado pretrain`` CLI."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> tuple[Path, Path]:
    """A 3,000-piece SentencePiece tokenizer and a ja/en pack of ~250k characters each."""
    from kamado.corpus.docs import resolve_inputs
    from kamado.data.config import PackConfig
    from kamado.data.pack import pack as do_pack
    from kamado.tokenizer.config import TokenizerConfig
    from kamado.tokenizer.train import train_tokenizer

    top = tmp_path_factory.mktemp("pretrain_inputs")
    ja, en = top / "ja.jsonl", top / "en.jsonl"
    with gzip.open(data_root / "ja_text" / "jaquad_train_wikipedia_paragraphs.jsonl.gz", "rt", encoding="utf-8") as f, \
            ja.open("w", encoding="utf-8") as out:
        n = 0
        for i, line in enumerate(f):
            text = json.loads(line).get("text", "")
            out.write(json.dumps({"id": f"ja{i}", "text": text, "source": "ja", "lang": "ja"}, ensure_ascii=False) + "\n")
            n += len(text)
            if n > 250_000:
                break
    paras = (data_root / "en_text" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:250_000].split("\n\n")
    en.write_text("".join(json.dumps({"id": f"en{i}", "text": p, "source": "en", "lang": "en"}) + "\n"
                          for i, p in enumerate(paras) if p.strip()), encoding="utf-8")
    specs = resolve_inputs([f"ja={ja}", f"en={en}"])
    tok = top / "tokenizer"
    train_tokenizer(specs, TokenizerConfig(vocab_size=3000, sample_chars=400_000, num_threads=2), tok)
    pk = top / "data"
    do_pack(resolve_inputs([f"ja={ja}", f"en={en}"]), tok, pk, PackConfig(workers=1, valid_fraction=0.05))
    return pk, tok


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
