"""A real (short) tuning run: full and LoRA on a tiny random-init LLaMA, through the one training engine."""

from __future__ import annotations

import json

import pytest
from test_tune_sft import build_model, build_tokenizer

pytestmark = pytest.mark.slow  # ~35 s of CPU: two short training runs and exports


def save_floor(model_dir):
    """A unigram floor beside a model, as the pretrain stage saves it (kamado.data.unigram)."""
    import numpy as np

    from kamado.data.unigram import save_unigram

    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    counts = np.random.default_rng(0).integers(0, 100, vocab) + 0.5
    save_unigram(model_dir, counts / counts.sum(), {"shares": {"ja": 1.0}, "alpha": 0.5, "vocab": vocab})


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, data_root):
    from kamado.stage import StageContext
    from kamado.train.config import OptimizerConfig, TrainConfig
    from kamado.tune.config import LoraSettings, TuneConfig
    from kamado.tune.stage import run

    d = tmp_path_factory.mktemp("tune")
    base = build_model(d / "base", build_tokenizer(d / "t", data_root), seed=2, hidden=32)
    save_floor(base)
    cfg = TuneConfig(data=["dolly-ja"], max_examples=120, valid_fraction=0.1, base=str(base),
                     train=TrainConfig(steps=8, batch_size=4, seq_len=96, warmup_steps=1, eval_every=4,
                                       ckpt_every=4, precision="bf16",
                                       optimizer=OptimizerConfig(lr=3e-3, min_lr=3e-4, weight_decay=0.0)),
                     lora=LoraSettings(r=4, alpha=8, dropout=0.0), lora_lr=1e-2)
    ctx = StageContext(name="tune", out=d / "out", data_root=data_root, seed=5, cache_dir=d / "cache")
    ctx.out.mkdir()
    counts = run(cfg, ctx)
    return base, ctx, cfg, counts


def test_outputs_and_comparison(tuned):
    base, ctx, cfg, counts = tuned
    out = ctx.out
    for p in ("full/hf/model.safetensors", "full/hf/config.json", "lora/adapter/adapter_model.safetensors",
              "lora/adapter/adapter_config.json", "lora/hf/model.safetensors", "full/metrics.jsonl",
              "lora/metrics.jsonl", "tune.json", "data.json"):
        assert (out / p).is_file(), p
    assert not (out / "full" / "checkpoints").exists()  # deleted once exported
    summary = json.loads((out / "tune.json").read_text())
    full, lora = summary["methods"]["full"], summary["methods"]["lora"]
    assert full["trainable_pct"] == 100.0 and 0 < lora["trainable_pct"] < 20
    assert lora["trainable_params"] < full["trainable_params"]
    for m in (full, lora):
        assert m["steps"] == 8 and m["wall_s"] > 0 and m["tokens_per_s"] > 0
        # training on answers lowers the held-out answer loss of a random-init model
        assert m["val_loss_after"] < m["val_loss_before"], m
        # the engine's own validation (bf16 weights) agrees with ours (fp32 weights restored)
        assert m["engine_val_loss"] == pytest.approx(m["val_loss_after"], abs=0.05)
    assert full["val_loss_after"] < full["val_loss_before"] - 0.1  # full FT moves faster on a random init
    assert full["val_loss_before"] == pytest.approx(lora["val_loss_before"], abs=1e-4)  # LoRA starts at the base
    steps = [json.loads(x) for x in (out / "lora" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "loss" in r] == list(range(1, 9))
    assert counts["train_examples"] == summary["data"]["train_examples"]
    assert counts["full_val_loss_after"] == full["val_loss_after"]


def test_exports_load_with_chat_template_and_merge_is_exact(tuned):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kamado.tune.lora import load_adapter
    from kamado.tune.templates import CHAT_TEMPLATE

    base, ctx, _, _ = tuned
    tok = AutoTokenizer.from_pretrained(str(ctx.out / "lora" / "hf"))
    assert tok.chat_template == CHAT_TEMPLATE
    ids = tok.apply_chat_template([{"role": "user", "content": "日本の首都は？"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    merged = AutoModelForCausalLM.from_pretrained(str(ctx.out / "lora" / "hf")).eval()
    assert merged.config.use_cache and merged.config.model_type == "llama"
    adapter = load_adapter(base, ctx.out / "lora" / "adapter").eval()
    with torch.no_grad():
        a, b = merged(input_ids=ids).logits, adapter(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    # LoRA never touches weights outside its target modules: they equal the base bit for bit
    bw = load_file(str(base / "model.safetensors"))
    mw = load_file(str(ctx.out / "lora" / "hf" / "model.safetensors"))
    for k in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert torch.equal(bw[k], mw[k]), k
    assert not torch.equal(bw["model.layers.0.self_attn.q_proj.weight"], mw["model.layers.0.self_attn.q_proj.weight"])
    full = AutoModelForCausalLM.from_pretrained(str(ctx.out / "full" / "hf")).eval()
    with torch.no_grad():
        out = full.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 4 or int(out[0, -1]) == tok.eos_token_id


def test_tuned_models_inherit_the_unigram_floor(tuned, data_root, tmp_path):
    """Both exports carry the base's kamado_unigram.npy/.json, so perplexity reports unigram_bpc for them too."""
    import numpy as np

    from kamado.eval.harness import EvalSettings, evaluate_model, load_model
    from kamado.eval.perplexity import load_unigram
    from kamado.tune.stage import inherit_unigram_floor

    base, ctx, _, _ = tuned
    for method in ("full", "lora"):
        hf = ctx.out / method / "hf"
        for f in ("kamado_unigram.npy", "kamado_unigram.json"):
            assert (hf / f).read_bytes() == (base / f).read_bytes(), (method, f)
    hf = ctx.out / "full" / "hf"
    assert np.array_equal(load_unigram(hf), load_unigram(base))
    model, tok = load_model(hf)
    s = EvalSettings(ppl_sources=["ja_wiki=jsquad-valid"], ppl_max_chars=2000, batch_size=2)
    res = evaluate_model(model, tok, ["perplexity"], s, root=data_root, model_dir=hf)["perplexity"]
    assert res["unigram_bpc"] > 0 and res["bpc"] > 0 and "unigram_bpc@ja_wiki" in res
    (tmp_path / "bare").mkdir()
    assert inherit_unigram_floor(tmp_path / "bare", tmp_path) == []  # a base without a floor: nothing copied


def test_rerun_resumes_without_training(tuned):
    from kamado.tune.stage import run

    base, ctx, cfg, counts = tuned
    mtime = (ctx.out / "full" / "hf" / "model.safetensors").stat().st_mtime_ns
    again = run(cfg, ctx)
    assert again == counts
    assert (ctx.out / "full" / "hf" / "model.safetensors").stat().st_mtime_ns == mtime


def test_cli_lora_only(tuned, tmp_path, data_root, monkeypatch):
    from typer.testing import CliRunner

    from kamado.cli import app

    base = tuned[0]
    monkeypatch.setenv("KAMADO_DATA_ROOT", str(data_root))
    res = CliRunner().invoke(app, ["tune", "--base", str(base), "--out", str(tmp_path / "o"), "--method", "lora",
                                   "--steps", "2", "--max-examples", "40", "--seq-len", "64", "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "o" / "tune.json").read_text())
    assert list(summary["methods"]) == ["lora"]
    assert (tmp_path / "o" / "manifest.json").is_file()
    bad = CliRunner().invoke(app, ["tune", "--base", str(base), "--out", str(tmp_path / "x"), "--method", "qlora"])
    assert bad.exit_code != 0


def test_killed_tuning_resumes_on_the_same_curve(tuned, tmp_path, data_root, monkeypatch):
    """Crash after the step-2 checkpoint, re-run: it resumes there and matches an uninterrupted run."""
    from kamado.stage import StageContext
    from kamado.tune import sft
    from kamado.tune.stage import run

    cfg, whole = _four_steps_whole(tuned, tmp_path, data_root)
    losses = _losses

    crash = StageContext(name="tune", out=tmp_path / "crash", data_root=data_root, seed=3, quiet=True)
    crash.out.mkdir()
    real_next = sft.SFTBatches.next_batch
    calls = {"n": 0}

    def dying(self):
        calls["n"] += 1
        if calls["n"] == 4:  # the 4th micro-batch: step 3, after the step-2 checkpoint
            raise RuntimeError("killed")
        return real_next(self)

    monkeypatch.setattr(sft.SFTBatches, "next_batch", dying)
    with pytest.raises(RuntimeError, match="killed"):
        run(cfg, crash)
    monkeypatch.setattr(sft.SFTBatches, "next_batch", real_next)
    run(cfg, crash)
    result = json.loads((crash.out / "full" / "result.json").read_text())
    assert result["resumed_from"] == 2
    got, want = losses(crash.out), losses(whole.out)
    assert [s for s, _ in got] == [s for s, _ in want] == [1, 2, 3, 4]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6)


def test_preempted_tuning_saves_its_step_and_resumes_on_the_same_curve(tuned, tmp_path, data_root, monkeypatch):
    """SIGUSR1 during step 3 (checkpoints every 2): step 3 is finished and saved, the stage raises Preempted (the
    CLI exits 75), the guard writes `preempted`; the re-run resumes at step 3 and matches an uninterrupted run."""
    import os
    import signal

    from kamado.config import Preempted
    from kamado.monitor.guard import read_events
    from kamado.stage import StageContext
    from kamado.tune import sft
    from kamado.tune.stage import run

    cfg, whole = _four_steps_whole(tuned, tmp_path, data_root)
    losses = _losses
    cut = StageContext(name="tune", out=tmp_path / "cut", data_root=data_root, seed=3, quiet=True)
    cut.out.mkdir()
    real_next = sft.SFTBatches.next_batch
    calls = {"n": 0}

    def preempting(self):
        calls["n"] += 1
        if calls["n"] == 3:  # step 3's batch: the warning arrives while the step is in flight
            os.kill(os.getpid(), signal.SIGUSR1)
        return real_next(self)

    monkeypatch.setattr(sft.SFTBatches, "next_batch", preempting)
    with pytest.raises(Preempted, match="preempted by SIGUSR1 after step 3 of 4") as e:
        run(cfg, cut)
    assert e.value.step == 3 and (cut.out / "full" / "checkpoints" / "step_00000003" / "state.json").is_file()
    monkeypatch.setattr(sft.SFTBatches, "next_batch", real_next)
    run(cfg, cut)
    assert json.loads((cut.out / "full" / "result.json").read_text())["resumed_from"] == 3
    kinds = [ev["kind"] for ev in read_events(cut.out / "full" / "events.jsonl")]
    assert kinds == ["started", "preempted", "started", "finished"], kinds
    got, want = losses(cut.out), losses(whole.out)
    assert [s for s, _ in got] == [s for s, _ in want] == [1, 2, 3, 4]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6)


def _losses(out):
    recs = [json.loads(x) for x in (out / "full" / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if "loss" in r]


def _four_steps_whole(tuned, tmp_path, data_root):
    """Four steps of full tuning with checkpoints every 2, run uninterrupted into ``tmp_path/whole``."""
    from kamado.stage import StageContext
    from kamado.train.config import TrainConfig
    from kamado.tune.config import TuneConfig
    from kamado.tune.stage import run

    cfg = TuneConfig(data=["dolly-ja"], methods=["full"], max_examples=60, base=str(tuned[0]),
                     train=TrainConfig(steps=4, batch_size=2, seq_len=64, warmup_steps=1, eval_every=0,
                                       ckpt_every=2, precision="fp32"))
    whole = StageContext(name="tune", out=tmp_path / "whole", data_root=data_root, seed=3, quiet=True)
    whole.out.mkdir()
    run(cfg, whole)
    return cfg, whole
