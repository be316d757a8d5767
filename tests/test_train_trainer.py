"""The Trainer's callbacks: phases in order, a veto before the optimizer update, per-callback state saved in the
checkpoint, the LR applied = the LR logged; ``resume`` from a named checkpoint (before a run, or as a rollback
during one) continues on the same curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kamado.config import KamadoError
from kamado.train.callbacks import Callback
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


def _trainer(tokens, out: Path, callbacks=(), **kw) -> Trainer:
    from kamado.train.sources import TokenWindows

    cfg = TrainConfig(**(dict(steps=8, batch_size=2, seq_len=32, warmup_steps=2, eval_every=0, ckpt_every=2,
                              keep_last=10, seed=5, precision="fp32") | kw))
    return Trainer(_model(), TokenWindows(tokens, cfg.seq_len, cfg.batch_size, seed=1), cfg, out, quiet=True,
                   callbacks=callbacks)


def _steps(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


class Veto(Callback):
    """Sees each step before its update; ``answer`` is its vote."""

    def __init__(self, answer: bool | None) -> None:
        self.answer, self.seen = answer, []

    def pre_optim_step(self, trainer: Trainer, stats: StepStats) -> bool | None:
        self.seen.append(stats)
        return self.answer


def test_a_callback_sees_each_step_before_the_update_and_can_veto_it(one_thread, tokens, tmp_path: Path) -> None:
    veto = Veto(False)
    t = _trainer(tokens, tmp_path / "veto", callbacks=[veto], steps=4)
    t.setup()
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    res = t.fit()
    seen = veto.seen
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

    # callbacks that let every update through change nothing against a run without callbacks
    plain, hooked = tmp_path / "plain", tmp_path / "hooked"
    _trainer(tokens, plain, steps=4).fit()
    _trainer(tokens, hooked, callbacks=[Veto(None), Veto(True)], steps=4).fit()
    assert [r["loss"] for r in _steps(plain)] == [r["loss"] for r in _steps(hooked)]
    assert "skipped" not in _steps(hooked)[-1]


class Recorder(Callback):
    """Writes down each phase it hears; its state (steps seen) travels in the checkpoints."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.steps_seen = 0
        self.loaded: dict | None = None

    def pre_build(self) -> None:
        self.calls.append("pre_build")

    def pre_setup(self, trainer: Trainer) -> None:
        self.calls.append("pre_setup")
        assert not hasattr(trainer, "opt")  # before the model is placed and the optimizer built

    def pre_train(self, trainer: Trainer) -> None:
        self.calls.append(f"pre_train@{trainer.step_no}")

    def pre_step(self, trainer: Trainer, step: int) -> None:
        self.calls.append(f"pre_step{step}")

    def pre_optim_step(self, trainer: Trainer, stats: StepStats) -> None:
        self.calls.append(f"pre_optim_step{stats.step}")

    def post_step(self, trainer: Trainer, record: dict) -> None:
        self.steps_seen += 1
        self.calls.append(f"post_step{record['step']}")

    def log(self, trainer: Trainer, record: dict) -> None:
        self.calls.append(f"log{record['step']}")

    def post_checkpoint_saved(self, trainer: Trainer, step: int, path: Path | None) -> None:
        assert path is not None and (path / "state.json").is_file()
        self.calls.append(f"saved{step}")

    def post_train(self, trainer: Trainer, result) -> None:
        self.calls.append("post_train")

    def on_error(self, trainer: Trainer | None, error: BaseException) -> None:
        self.calls.append(f"on_error:{type(error).__name__}")

    def state_dict(self) -> dict:
        return {"steps_seen": self.steps_seen}

    def load_state_dict(self, state: dict) -> None:
        self.loaded = state
        self.steps_seen = int(state["steps_seen"])


def test_callback_phases_in_order_and_state_through_a_checkpoint(one_thread, tokens, tmp_path: Path) -> None:
    out = tmp_path / "run"
    rec = Recorder()
    _trainer(tokens, out, callbacks=[rec], steps=3, ckpt_every=2).fit()
    def step(n: int, saved: bool = False) -> list[str]:  # the trainer's checkpointer runs after our post_step
        return [f"pre_step{n}", f"pre_optim_step{n}", f"log{n}", f"post_step{n}"] + [f"saved{n}"] * saved

    assert rec.calls == ["pre_setup", "pre_train@0", *step(1), *step(2, True), *step(3, True), "post_train"]
    state = json.loads((out / "checkpoints" / "step_00000002" / "state.json").read_text())
    assert state["callbacks"]["recorder"] == {"steps_seen": 2}  # the metric sinks etc. keep no state

    again = Recorder()  # a resume from step 2 restores the callback's own state before pre_train
    _trainer(tokens, out, callbacks=[again], steps=3, ckpt_every=2).fit(resume_from=2)
    assert again.loaded == {"steps_seen": 2} and again.steps_seen == 3
    assert again.calls[:2] == ["pre_setup", "pre_train@2"]

    class Boom(Callback):
        def post_step(self, trainer: Trainer, record: dict) -> None:
            raise RuntimeError("boom")

    failing = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(tokens, tmp_path / "fail", callbacks=[failing, Boom()], steps=3).fit()
    assert failing.calls[-2:] == ["post_step1", "on_error:RuntimeError"]
    with pytest.raises(KamadoError, match="not a complete checkpoint"):  # one rule: state.json and the weights
        (tmp_path / "half").mkdir()
        (tmp_path / "half" / "state.json").write_text("{}")
        _trainer(tokens, tmp_path / "x").fit(resume_from=tmp_path / "half")


def test_logged_lr_is_the_lr_applied(one_thread, tokens, tmp_path: Path) -> None:
    """A callback's LR factor multiplies the schedule once; the optimizer applies it and metrics.jsonl logs it."""
    from kamado.train.optim import lr_at

    class Half(Callback):
        def __init__(self) -> None:
            self.applied: dict[int, list[float]] = {}

        def lr_factor(self, trainer: Trainer, step: int) -> float:
            return 0.5 if step in (3, 4) else 1.0

        def pre_optim_step(self, trainer: Trainer, stats: StepStats) -> None:
            self.applied[stats.step] = [g["lr"] for g in trainer.opt.param_groups]

    half = Half()
    out = tmp_path / "lr"
    t = _trainer(tokens, out, callbacks=[half], steps=5)
    t.fit()
    c = t.cfg
    for r in _steps(out):
        sched = lr_at(r["step"] - 1, lr=c.optimizer.lr, min_lr=c.optimizer.min_lr, total=c.steps,
                      warmup=c.warmup_steps, schedule=c.schedule, decay_fraction=c.decay_fraction)
        want = sched * (0.5 if r["step"] in (3, 4) else 1.0)
        assert half.applied[r["step"]] == [r["lr"]] * len(t.opt.param_groups)
        assert r["lr"] == pytest.approx(want, rel=1e-12)


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

    # during a run: a callback rolls back to the step-4 checkpoint (by folder) at step 6, once
    rolled = tmp_path / "rolled"
    once: list[int] = []

    class Rollback(Callback):
        def pre_optim_step(self, tr: Trainer, s: StepStats) -> bool:
            if s.step == 6 and not once:
                once.append(tr.resume(rolled / "checkpoints" / "step_00000004"))
                return False
            return True

    res = _trainer(tokens, rolled, callbacks=[Rollback()]).fit()
    assert once == [4]
    got = [(r["step"], r["loss"], r["grad_norm"]) for r in _steps(rolled)]
    assert [s for s, _, _ in got] == [1, 2, 3, 4, 5, 5, 6, 7, 8]  # step 6 abandoned, 5 taken again
    assert got[:5] == want[:5] and got[5:] == want[4:]
    again, _, _ = ckpt.load(ckpt.latest(rolled / "checkpoints"))
    assert all(torch_equal(again[k], final[k]) for k in final)

    with pytest.raises(KamadoError, match="no complete checkpoint at step 3"):
        _trainer(tokens, ref).fit(resume_from=3)
