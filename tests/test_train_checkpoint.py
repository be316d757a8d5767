"""Checkpoints: atomic (a torn write is never picked up), retention, no pickles; HF export loads; schedules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kamado.train import checkpoint as ckpt
from kamado.train.optim import lr_at, param_groups


def _save(root: Path, step: int, **kw: int) -> Path:
    import torch

    w = torch.arange(6, dtype=torch.float32).reshape(2, 3) * step
    osd = {"state": {0: {"step": torch.tensor(float(step)), "exp_avg": torch.ones(2, 3)}},
           "param_groups": [{"lr": 0.1, "betas": (0.9, 0.95), "params": [0]}]}
    return ckpt.save(root, step, {"w": w}, osd, {"sampler": [{"calls": step}], "rng": [ckpt.rng_state()]}, **kw)


def test_roundtrip_and_no_pickle(tmp_path: Path) -> None:
    p = _save(tmp_path, 5)
    assert sorted(x.name for x in p.iterdir()) == ["model.safetensors", "optim.safetensors", "state.json"]
    msd, osd, state = ckpt.load(p)
    assert msd["w"][1, 2].item() == 25.0 and state["step"] == 5 and state["sampler"] == [{"calls": 5}]
    assert osd["param_groups"][0]["betas"] == (0.9, 0.95) and osd["state"][0]["step"].item() == 5.0
    ckpt.set_rng_state(state["rng"][0])


def test_torn_checkpoints_are_ignored_and_cleaned(tmp_path: Path) -> None:
    _save(tmp_path, 3)
    # a writer killed mid-save leaves a temp folder, and a step folder without state.json is not complete
    torn = tmp_path / ".tmp-step_00000006-999999"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"partial")
    half = tmp_path / "step_00000009"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    assert ckpt.latest(tmp_path).name == "step_00000003"
    _save(tmp_path, 4)
    assert ckpt.latest(tmp_path).name == "step_00000004"
    assert not torn.exists()  # stale temps of dead writers are removed


def test_keep_last_and_every(tmp_path: Path) -> None:
    for s in range(1, 11):
        _save(tmp_path, s, keep_last=2, keep_every=4)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 8, 9, 10]


def test_schedules_and_decay_groups() -> None:
    import torch

    kw = dict(lr=1.0, min_lr=0.1, total=100, warmup=10)
    assert lr_at(0, schedule="cosine", **kw) == pytest.approx(0.1)
    assert lr_at(9, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_at(99, schedule="cosine", **kw) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(50, schedule="wsd", decay_fraction=0.2, **kw) == 1.0
    assert lr_at(99, schedule="wsd", decay_fraction=0.2, **kw) == pytest.approx(0.1)
    assert lr_at(60, schedule="constant", **kw) == 1.0
    lin, norm = torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)
    groups = param_groups([("l.weight", lin.weight), ("l.bias", lin.bias), ("n.weight", norm.weight)], 0.1)
    assert [len(g["params"]) for g in groups] == [1, 2] and groups[1]["weight_decay"] == 0.0


def test_engine_exports_a_loadable_hf_model(tmp_path: Path, data_root: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from kamado.model.presets import build_model, llama_config
    from kamado.train.config import TrainConfig
    from kamado.train.sources import TokenWindows, byte_tokens
    from kamado.train.trainer import train

    toks = byte_tokens(data_root / "en_text" / "alice_in_wonderland.txt", 50_000)
    mconf = llama_config("tiny", vocab_size=256, overrides=dict(hidden_size=64, intermediate_size=128,
                                                                 num_hidden_layers=2, num_attention_heads=2,
                                                                 num_key_value_heads=2))
    model = build_model(mconf, seed=0)
    cfg = TrainConfig(steps=4, batch_size=2, seq_len=32, warmup_steps=1, eval_every=0, ckpt_every=0, seed=0,
                      precision="bf16", z_loss=1e-4, tensorboard=True)
    res = train(model, TokenWindows(toks, 32, 2, seed=0), cfg, tmp_path / "run", hf_export=tmp_path / "hf", quiet=True)
    assert res.steps == 4 and res.tokens == 4 * 2 * 32 and res.mfu > 0
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "tflops", "mfu", "mem_gb"} <= set(recs[-1])
    assert list((tmp_path / "run" / "tensorboard").iterdir())
    cfgj = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfgj["model_type"] == "llama" and cfgj["architectures"] == ["LlamaForCausalLM"]
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    msd, _, _ = ckpt.load(ckpt.latest(tmp_path / "run" / "checkpoints"))
    assert torch.equal(hf.model.embed_tokens.weight, msd["model.embed_tokens.weight"])  # fp32 masters exported
    out = hf.generate(torch.tensor([[72, 101]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 6)
    # export on demand from the checkpoint folder gives the same weights
    from kamado.train.pretrain import export_checkpoint

    export_checkpoint(tmp_path / "run", tmp_path / "hf2")
    hf2 = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf2"))
    assert all(torch.equal(a, b) for a, b in zip(hf.parameters(), hf2.parameters(), strict=True))
