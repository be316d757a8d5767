"""The HTML report: built from a run folder made by really running small stages, and from partial folders.

The run folder is made here: a real SentencePiece tokenizer, real token packing of dolly-ja text, a real
(tiny) pretraining run through the training engine, the real tune stage (full + LoRA), and eval numbers
measured on the resulting models. Only the corpus ``stats.json`` is written by hand (in the format of
``kamado.corpus.dedup``), because that stage is exercised by its own tests.
"""

from __future__ import annotations

import base64
import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_tune_sft import build_model, build_tokenizer


class _Checker(HTMLParser):
    """Collects tags, checks nesting of block elements, and records any external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.external: list[str] = []
        self.tags: dict[str, int] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for k, v in attrs:
            if k in ("src", "href") and v and not (v.startswith("data:") or v.startswith("#")):
                self.external.append(v)
        if tag not in ("meta", "img", "br", "hr", "link", "input"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def check_html(doc: str) -> _Checker:
    c = _Checker()
    c.feed(doc)
    assert not c.errors, c.errors[:5]
    assert not c.stack, c.stack
    assert not c.external, c.external  # self-contained: no links to files or the network
    return c


def pngs(doc: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', doc)]


class _Windows:
    """A minimal resumable BatchSource over a flat token array (random windows)."""

    def __init__(self, tokens, seq_len: int, batch: int, seed: int) -> None:
        import torch

        self.tokens = torch.as_tensor(tokens.astype("int64"))
        self.seq_len, self.batch = seq_len, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.n = 0

    def next_batch(self):
        import torch

        starts = torch.randint(0, len(self.tokens) - self.seq_len, (self.batch,), generator=self.gen)
        ids = torch.stack([self.tokens[s : s + self.seq_len] for s in starts.tolist()])
        self.n += 1
        return {"input_ids": ids, "labels": ids.clone()}

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, d):
        for _ in range(d["n"]):
            self.next_batch()

    def metrics(self):
        return {"mix/ja": 1.0}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_root) -> Path:
    import numpy as np
    from transformers import AutoTokenizer

    from kamado.manifest import write_json_atomic, write_manifest
    from kamado.recipe import Recipe
    from kamado.stage import StageContext
    from kamado.train.config import OptimizerConfig, TrainConfig
    from kamado.train.trainer import train
    from kamado.tune.config import LoraSettings, TuneConfig
    from kamado.tune.sft import collate, encode_chat, evaluate_loss, read_chats
    from kamado.tune.stage import run as tune_run

    top = tmp_path_factory.mktemp("report")
    run = top / "run"
    run.mkdir()
    recipe = Recipe(name="report-test", seed=7, tune=TuneConfig(), report={"title": "t"})
    write_json_atomic(run / "recipe.json", recipe.model_dump(mode="json"))

    # corpus: accounting in kamado.corpus.dedup's stats.json format
    (run / "corpus" / "ja").mkdir(parents=True)
    write_json_atomic(run / "corpus" / "sources.json", [{"name": "ja", "lang": "ja", "kept": "ja/kept"}])
    write_json_atomic(run / "corpus" / "ja" / "stats.json", {
        "input": 120, "kept": 100, "rejected": 17, "errors": 3,
        "steps": [{"name": "lang_filter", "input": 117, "rejected": 12}, {"name": "exact_dedup", "input": 105,
                                                                        "rejected": 5}]})
    write_manifest(run / "corpus", stage="corpus", config={}, counts={"docs_in": 120, "docs_kept": 100},
                   timings={"wall_s": 0.0})

    # tokenizer: a real SentencePiece model; counts measured on dolly-ja
    t0 = time.perf_counter()
    tok_dir = build_tokenizer(top / "sp", data_root)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    tok.save_pretrained(str(run / "tokenizer"))
    chats, _ = read_chats(data_root / "ja_instruct/databricks-dolly-15k-ja_first3000.jsonl", limit=300)
    texts = [c[-1]["content"] for c in chats]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    n_tok = sum(map(len, ids))
    write_manifest(run / "tokenizer", stage="tokenizer", config={}, timings={"wall_s": time.perf_counter() - t0},
                   counts={"vocab_size": len(tok), "chars_per_token": {"ja": round(sum(map(len, texts)) / n_tok, 4)}})

    # data: real packing of those texts into a uint16 token file
    t0 = time.perf_counter()
    flat = np.array([i for doc in ids for i in [*doc, tok.eos_token_id]], dtype=np.uint16)
    (run / "data" / "ja").mkdir(parents=True)
    cut = int(len(flat) * 0.9)
    flat[:cut].tofile(run / "data" / "ja" / "train.bin")
    flat[cut:].tofile(run / "data" / "ja" / "valid.bin")
    write_json_atomic(run / "data" / "pack.json", {
        "vocab_size": len(tok), "dtype": "uint16", "eos_id": tok.eos_token_id, "bos_id": tok.bos_token_id,
        "sources": {"ja": {"lang": "ja", "train_tokens": cut, "valid_tokens": len(flat) - cut, "docs": len(ids),
                           "train": "ja/train.bin", "valid": "ja/valid.bin"}}})
    write_manifest(run / "data", stage="data", config={}, counts={"ja_train_tokens": cut},
                   timings={"wall_s": time.perf_counter() - t0})

    # pretrain: the real engine on a tiny random-init LLaMA
    base = build_model(top / "init", tok_dir, seed=3, hidden=32)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base))
    tcfg = TrainConfig(steps=6, batch_size=4, seq_len=64, warmup_steps=1, eval_every=3, ckpt_every=6,
                       precision="fp32", optimizer=OptimizerConfig(lr=3e-3, min_lr=3e-4))
    valid = [_Windows(flat[cut:], 64, 4, 0).next_batch() for _ in range(2)]
    res = train(model, _Windows(flat[:cut], 64, 4, 1), tcfg, run / "pretrain", valid=valid,
                hf_export=run / "pretrain" / "hf", tokenizer=tok_dir, quiet=True)
    write_manifest(run / "pretrain", stage="pretrain", config=tcfg.model_dump(mode="json"),
                   counts={"steps": res.steps, "final_loss": res.final_loss}, timings={"wall_s": res.wall_s})

    # tune: the real stage
    cfg = TuneConfig(max_examples=80, train=TrainConfig(steps=3, batch_size=4, seq_len=96, warmup_steps=1,
                                                        eval_every=3, ckpt_every=3, precision="fp32"),
                     lora=LoraSettings(r=2, alpha=4, dropout=0.0))
    ctx = StageContext(name="tune", out=run / "tune", inputs={"pretrain": run / "pretrain"}, data_root=data_root,
                       seed=7, run_dir=run, quiet=True)
    ctx.out.mkdir()
    t0 = time.perf_counter()
    counts = tune_run(cfg, ctx)
    write_manifest(ctx.out, stage="tune", config=cfg.model_dump(mode="json"), counts=counts,
                   timings={"wall_s": time.perf_counter() - t0})

    # eval: answer loss of each model on held-out chats, measured here
    t0 = time.perf_counter()
    held = [encode_chat(tok, c) for c in read_chats(data_root / "ja_instruct/databricks-dolly-15k-ja_first3000.jsonl",
                                                       limit=2000)[0][-16:]]
    batch = [collate([e for e in held if len(e.ids) <= 128][:8], 0)]
    results = {}
    for name, path in (("pretrain", run / "pretrain" / "hf"), ("tune/full", run / "tune" / "full" / "hf"),
                       ("tune/lora", run / "tune" / "lora" / "hf")):
        m = AutoModelForCausalLM.from_pretrained(str(path))
        loss = evaluate_loss(m, batch)
        results[name] = {"dolly_answers": {"loss": loss, "ppl": float(np.exp(loss)), "n": 8}}
    (run / "eval").mkdir()
    write_json_atomic(run / "eval" / "results.json", {"models": results})
    write_manifest(run / "eval", stage="eval", config={}, counts={"models": 3},
                   timings={"wall_s": time.perf_counter() - t0})
    return run


pytestmark = pytest.mark.slow  # ~30 s: a tiny pretraining and tuning run build the report's inputs


def test_report_from_real_run(run_dir):
    from kamado.report.config import ReportConfig
    from kamado.report.stage import run
    from kamado.stage import StageContext

    ctx = StageContext(name="report", out=run_dir / "report", run_dir=run_dir, quiet=True)
    ctx.out.mkdir(exist_ok=True)
    counts = run(ReportConfig(title="kamado tiny report"), ctx)
    doc = (run_dir / "report.html").read_text(encoding="utf-8")
    assert doc == (ctx.out / "report.html").read_text(encoding="utf-8")
    assert counts["sections_missing"] == 0, counts
    c = check_html(doc)
    text = "".join(c.text)
    assert "kamado tiny report" in text
    for title in ("Run summary", "Corpus", "Tokenizer", "Token packing", "Pretraining",
                  "Instruction tuning: full vs LoRA", "Evaluation", "Stage manifests"):
        assert title in text, title
    images = pngs(doc)
    assert len(images) == counts["plots"] >= 7
    assert all(b.startswith(b"\x89PNG\r\n\x1a\n") and len(b) > 2000 for b in images)
    # numbers come from the run's files
    tune = json.loads((run_dir / "tune" / "tune.json").read_text())
    for m in ("full", "lora"):
        assert f"{tune['methods'][m]['val_loss_after']:.4g}" in text
        assert f"{tune['methods'][m]['trainable_params']:,}" in text
    pack = json.loads((run_dir / "data" / "pack.json").read_text())
    assert f"{pack['sources']['ja']['train_tokens']:,}" in text
    assert "lang_filter" in text and "✓" in text  # rejection reasons; input = kept + rejected + errors
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert f"{results['models']['tune/full']['dolly_answers']['loss']:.4g}" in text
    metrics = [json.loads(x) for x in (run_dir / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    last_val = [r["val_loss"] for r in metrics if "val_loss" in r][-1]
    assert f"{last_val:.4g}" in text
    man = json.loads((run_dir / "tune" / "manifest.json").read_text())
    assert man["versions"]["torch"] in text


def test_report_cli_compares_two_runs(run_dir, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from kamado.cli import app

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    out = tmp_path / "cmp.html"
    res = CliRunner().invoke(app, ["report", str(run_dir), str(other), "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = out.read_text(encoding="utf-8")
    c = check_html(doc)
    text = "".join(c.text)
    assert "Runs compared" in text
    assert "report-test (run): tune/full" in text and "report-test (other): tune/lora" in text
    assert len(pngs(doc)) >= 9
