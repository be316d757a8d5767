"""The Trainer's seams for a run guard: a hook sees loss and grad norm before the update and can veto it;
``resume`` from a named checkpoint (before a run, or as a rollback during one) continues on the same curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kamado.config import KamadoError
from kamado.train.config import TrainConfig
from kamado.train.trainer import StepStats, Trainer


@pytest.fixture(scope="module")
def tokens(data_root: Path):
    from kamado.train.sources import byte_tokens

    return byte_tokens(data_root / "en_text" / "alice_in_wonderland.txt", 60_000)


def _model():
    from kamado.model.presets import build_model, llama_config

    return build_model(llama_config("tiny", vocab_size=256, overrides=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)),
        seed=3)


def _trainer(tokens, out: Path, hooks=(), **kw) -> Trainer:
    from kamado.train.sources import TokenWindows

    cfg = TrainConfig(**(dict(steps=8, batch_size=2, seq_len=32, warmup_steps=2, eval_every=0, ckpt_every=2,
                              keep_last=10, seed=5, precision="fp32") | kw))
    return Trainer(_model(), TokenWindows(tokens, cfg.seq_len, cfg.batch_size, seed=1), cfg, out, quiet=True,
                   hooks=hooks)


def _steps(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_a_hook_sees_each_step_before_the_update_and_can_veto_it(one_thread, tokens, tmp_path: Path) -> None:
    seen: list[StepStats] = []
    t = _trainer(tokens, tmp_path / "veto", hooks=[lambda tr, s: seen.append(s) or False], steps=4)
    t.setup()
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    res = t.fit()
    assert [s.step for s in seen] == [1, 2, 3, 4]
    recs = _steps(tmp_path / "veto")
    assert all(r["skipped"] for r in recs)
    assert [r["loss"] for r in recs] == [s.loss for s in seen]
    assert [r["grad_norm"] for r in recs] == [round(s.grad_norm, 6) for s in seen]
    assert all(s.grad_norm > 0 and s.lr > 0 for s in seen)
    for n, p in t.model.named_parameters():  # no update ever applied
        assert torch_equal(p, before[n]), n
    assert not t.opt.state  # AdamW never stepped
    assert res.steps == 4 and res.final_loss == seen[-1].loss

    # a hook that lets every update through changes nothing against a run without hooks
    plain, hooked = tmp_path / "plain", tmp_path / "hooked"
    _trainer(tokens, plain, steps=4).fit()
    _trainer(tokens, hooked, hooks=[lambda tr, s: None, lambda tr, s: True], steps=4).fit()
    assert [r["loss"] for r in _steps(plain)] == [r["loss"] for r in _steps(hooked)]
    assert "skipped" not in _steps(hooked)[-1]


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a.detach().cpu(), b.cpu())


def test_resume_from_a_named_checkpoint_reproduces_the_curve(one_thread, tokens, tmp_path: Path) -> None:
    from kamado.train import checkpoint as ckpt

    ref = tmp_path / "ref"
    _trainer(tokens, ref).fit()
    want = [(r["step"], r["loss"], r["grad_norm"]) for r in _steps(ref)]
    assert [s for s, _, _ in want] == list(range(1, 9))
    final, _, _ = ckpt.load(ckpt.latest(ref / "checkpoints"))

    # before a run: fit(resume_from=step) continues from that checkpoint, not the latest
    res = _trainer(tokens, ref).fit(resume_from=4)
    assert res.resumed_from == 4
    assert [(r["step"], r["loss"], r["grad_norm"]) for r in _steps(ref)] == want

    # during a run: a hook rolls back to the step-4 checkpoint (by folder) at step 6, once
    rolled = tmp_path / "rolled"
    once: list[int] = []

    def rollback(tr: Trainer, s: StepStats) -> bool:
        if s.step == 6 and not once:
            once.append(tr.resume(rolled / "checkpoints" / "step_00000004"))
            return False
        return True

    res = _trainer(tokens, rolled, hooks=[rollback]).fit()
    assert once == [4]
    got = [(r["step"], r["loss"], r["grad_norm"]) for r in _steps(rolled)]
    assert [s for s, _, _ in got] == [1, 2, 3, 4, 5, 5, 6, 7, 8]  # step 6 abandoned, 5 taken again
    assert got[:5] == want[:5] and got[5:] == want[4:]
    again, _, _ = ckpt.load(ckpt.latest(rolled / "checkpoints"))
    assert all(torch_equal(again[k], final[k]) for k in final)

    with pytest.raises(KamadoError, match="no complete checkpoint at step 3"):
        _trainer(tokens, ref).fit(resume_from=3)
