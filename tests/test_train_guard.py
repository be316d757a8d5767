"""The run guard (the Guard callback) in real (tiny) training runs: an LR-spike drill is detected, rolled back and
its data window skipped, the LR after the rollback logged as applied; a NaN drill costs one skipped update; a
hanging trainer is stopped by the watchdog, also during setup (before the first forward pass); a SIGKILLed trainer
is reported as crashed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_monitor_guard import Receivers

from kamado.monitor.guard import GuardConfig, InjectConfig, read_events


@pytest.fixture
def receivers():
    """A real SMTP server and HTTP webhook receiver on 127.0.0.1."""
    r = Receivers()
    yield r
    r.close()


# A tiny LLaMA on a learnable synthetic stream (rows are arithmetic sequences mod V), resumable by position.
_COMMON = textwrap.dedent('''
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    V, T = 64, 32

    class Stream:
        def __init__(self, micro=4, rank=0, world=1):
            self.pos, self.micro, self.rank, self.world = 0, micro, rank, world
        def next_batch(self):
            g = torch.Generator().manual_seed(1000 + self.pos * self.world + self.rank)
            a = torch.randint(0, V, (self.micro, 1), generator=g)
            b = torch.randint(1, 4, (self.micro, 1), generator=g)
            ids = (a + b * torch.arange(T)) % V
            self.pos += 1
            return {"input_ids": ids, "labels": ids.clone()}
        def state_dict(self):
            return {"pos": self.pos}
        def load_state_dict(self, d):
            self.pos = int(d["pos"])

    def model():
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=T))

    def tcfg(steps=60, **kw):
        from kamado.train.config import TrainConfig
        return TrainConfig(steps=steps, batch_size=4, seq_len=T, precision="fp32", warmup_steps=5, ckpt_every=10,
                           keep_last=10, eval_every=0, fused_ce=False, seed=1, **kw)
''')
exec(_COMMON)  # noqa: S102  (the same definitions for in-process runs and the subprocess trainer below)


def _run(out: Path, guard: GuardConfig, steps: int = 60):
    from kamado.train.guard import run_guarded
    from kamado.train.trainer import Trainer

    res = run_guarded(lambda cbs: Trainer(model(), Stream(), tcfg(steps), out, quiet=True, callbacks=cbs),  # noqa: F821
                      guard, None, out, run="test")
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return res, [r for r in recs if "loss" in r], read_events(out / "events.jsonl")


def _tail(recs, n=5):
    return sum(r["loss"] for r in recs[-n:]) / n


@pytest.fixture(scope="module")
def clean(tmp_path_factory, one_thread):
    res, recs, ev = _run(tmp_path_factory.mktemp("clean"), GuardConfig(warmup=8, watchdog=False))
    assert [e["kind"] for e in ev] == ["started", "finished"]  # no false alarms on a healthy run
    return recs


def test_lr_spike_rolled_back_and_window_skipped(tmp_path, clean, one_thread):
    res, recs, ev = _run(tmp_path, GuardConfig(warmup=8, watchdog=False, inject=InjectConfig(step=35, kind="lr_spike")))
    kinds = [e["kind"] for e in ev]
    assert "inject" in kinds and "rollback" in kinds and kinds[-1] == "finished", kinds
    assert any(k in ("spike", "nonfinite", "grad_explosion") for k in kinds)
    rb = next(e for e in ev if e["kind"] == "rollback")
    d = rb["detail"]
    assert d["from_step"] == 30 and d["to_step"] == rb["step"] and d["first_bad_step"] == 36
    assert d["sampler_from"] == [{"pos": 30}] and d["sampler_to"][0]["pos"] == rb["step"]
    # the weights went back to step 30, the data did not: steps 31.. read batches never seen before
    assert res.steps == 60 and recs[-1]["step"] == 60
    state = json.loads((tmp_path / "checkpoints" / "step_00000030" / "state.json").read_text())
    assert state["sampler"] == d["sampler_to"] and state["callbacks"]["guard"]["rollbacks"] == 1
    final_ck = json.loads((tmp_path / "checkpoints" / "step_00000060" / "state.json").read_text())
    assert final_ck["sampler"][0]["pos"] == 60 + rb["step"] - 30
    spiked = max(r["loss"] for r in recs if r["step"] > 35)
    assert spiked > 2 * clean[34]["loss"]  # the drill really blew the loss up
    assert _tail(recs) < _tail(clean) * 1.10, (_tail(recs), _tail(clean))
    assert next(r["lr"] for r in recs if r["step"] == 35) == pytest.approx(clean[34]["lr"] * 1000, rel=1e-9)


def test_lr_after_a_rollback_is_logged_as_applied(tmp_path, one_thread):
    """rollback_lr_factor 0.5: the steps taken again after the rollback log 0.5 × the clean run's LR."""
    _, recs, ev = _run(tmp_path, GuardConfig(warmup=8, watchdog=False, rollback_lr_factor=0.5, rollback_lr_steps=20,
                                             inject=InjectConfig(step=35, kind="lr_spike")), steps=45)
    from kamado.train.optim import lr_at

    rb = next(e for e in ev if e["kind"] == "rollback")
    assert rb["detail"]["lr_low_until"] == rb["step"] + 20
    c = tcfg(45)  # noqa: F821
    want = {s: lr_at(s - 1, lr=c.optimizer.lr, min_lr=c.optimizer.min_lr, total=45, warmup=c.warmup_steps,
                     schedule=c.schedule, decay_fraction=c.decay_fraction) for s in range(1, 46)}
    first = recs[:next(i for i, r in enumerate(recs) if i and r["step"] <= recs[i - 1]["step"])]
    assert all(r["lr"] == pytest.approx(want[r["step"]], rel=1e-9) for r in first if r["step"] != 35)
    seen: dict[int, float] = {}
    redone = {}
    for r in recs:
        if r["step"] in seen:
            redone[r["step"]] = r["lr"]
        seen[r["step"]] = r["lr"]
    assert sorted(redone) == list(range(31, rb["step"]))
    for s, lr in redone.items():
        assert lr == pytest.approx(0.5 * want[s], rel=1e-9), s
    after = [r for r in recs if r["step"] > rb["step"]]  # new steps still inside the low-LR window
    assert after and all(r["lr"] == pytest.approx(0.5 * want[r["step"]], rel=1e-9) for r in after)


def test_nan_step_is_skipped_without_rollback(tmp_path, clean, one_thread):
    res, recs, ev = _run(tmp_path, GuardConfig(warmup=8, watchdog=False, inject=InjectConfig(step=20, kind="nan")),
                         steps=30)
    kinds = [e["kind"] for e in ev]
    assert kinds == ["started", "inject", "nonfinite", "finished"], kinds
    bad = next(e for e in ev if e["kind"] == "nonfinite")
    assert bad["step"] == 20 and bad["detail"]["action"] == "skip" and bad["detail"]["loss"] == "nan"
    assert [r["step"] for r in recs if r.get("skipped")] == [20]
    assert all(r["loss"] == r["loss"] for r in recs if r["step"] != 20)  # finite everywhere else
    assert abs(recs[-1]["loss"] - clean[29]["loss"]) < 0.5


# ---------------------------------------------------------------- real processes: hang and SIGKILL

_TRAINER = _COMMON + textwrap.dedent('''
    import sys
    from pathlib import Path
    from kamado.monitor.alerts import AlertsConfig
    from kamado.monitor.guard import GuardConfig
    from kamado.train.guard import run_guarded
    from kamado.train.trainer import Trainer
    torch.set_num_threads(1)
    out, guard, alerts = Path(sys.argv[1]), GuardConfig.model_validate_json(sys.argv[2]), AlertsConfig.model_validate_json(sys.argv[3])
    run_guarded(lambda cbs: Trainer(model(), Stream(), tcfg(int(sys.argv[4])), out, quiet=True, callbacks=cbs),
                guard, alerts, out, run="proc")
''')


def _proc(tmp_path: Path, guard: GuardConfig, alerts, steps: int) -> subprocess.Popen:
    script = tmp_path / "trainer.py"
    script.write_text(_TRAINER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "run"), guard.model_dump_json(),
                             alerts.model_dump_json(), str(steps)], stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow  # 28 s: a real training process and the watchdog (test-fast run on a loaded box)
def test_hang_drill_in_real_training_stopped_by_watchdog(tmp_path, receivers):
    alerts = receivers.alerts("json").model_copy(update={"email": None})
    p = _proc(tmp_path, GuardConfig(hang_timeout_s=4, term_grace_s=3, inject=InjectConfig(step=8, kind="hang")),
              alerts, 1000)
    rc = p.wait(timeout=55)
    err = p.stderr.read()
    assert rc != 0 and "hang_timeout_s=4" in err, err[-2000:]
    out = tmp_path / "run"
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["step"] == 8
    hang = [json.loads(x["body"]) for x in receivers.posts if '"hang"' in x["body"]]
    assert hang and hang[0]["step"] == 8
    assert hang[0]["time"] - (out / "metrics.jsonl").stat().st_mtime < 4 + 5
    kinds = [e["kind"] for e in read_events(out / "events.jsonl")]
    assert "hang" in kinds and "stopped" in kinds  # the watchdog's events and the trainer's own `stopped`


def test_hang_during_setup_stopped_by_the_startup_timeout(tmp_path, receivers):
    """inject step 0, kind hang: the process hangs after building the model, before the first forward pass; the
    watchdog (started before the build) stops it after guard.startup_timeout_s, not hang_timeout_s."""
    alerts = receivers.alerts("json").model_copy(update={"email": None})
    t0 = time.time()
    p = _proc(tmp_path, GuardConfig(startup_timeout_s=3, hang_timeout_s=600, term_grace_s=3,
                                    inject=InjectConfig(step=0, kind="hang")), alerts, 1000)
    rc = p.wait(timeout=60)
    err = p.stderr.read()
    assert rc != 0 and "startup_timeout_s=3" in err and "after the start" in err, err[-2000:]
    assert time.time() - t0 < 40
    out = tmp_path / "run"
    assert not (out / "metrics.jsonl").exists()  # no step was taken
    ev = read_events(out / "events.jsonl")
    kinds = [e["kind"] for e in ev]
    assert kinds[:2] == ["inject", "hang"] and "stopped" in kinds and "started" not in kinds, kinds
    assert ev[0]["step"] == 0 and ev[1]["detail"]["timeout_s"] == 3
    assert json.loads((out / "heartbeat.json").read_text())["state"] == "failed"
    assert any(json.loads(x["body"])["kind"] == "hang" for x in receivers.posts)


@pytest.mark.slow  # 24 s: a real training process, SIGKILL (test-fast run on a loaded box)
def test_sigkill_of_real_trainer_gives_crashed_alert(tmp_path, receivers):
    p = _proc(tmp_path, GuardConfig(hang_timeout_s=60), receivers.alerts("slack"), 100000)
    m = tmp_path / "run" / "metrics.jsonl"
    t_end = time.time() + 40
    while time.time() < t_end and not (m.is_file() and m.read_text().count("\n") >= 5):
        time.sleep(0.1)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    t_end = time.time() + 25
    while time.time() < t_end and not any("crashed" in x["body"] for x in receivers.posts):
        time.sleep(0.1)
    crashed = [json.loads(x["body"])["text"] for x in receivers.posts if "crashed" in x["body"]]
    assert crashed and "died without a clean end" in crashed[0]
    assert any("crashed" in x["data"] for x in receivers.mails)
    ev = read_events(tmp_path / "run" / "events.jsonl")
    last = [json.loads(x) for x in m.read_text().splitlines() if x.strip()][-1]["step"]
    assert any(e["kind"] == "crashed" and abs(e["step"] - last) <= 1 for e in ev)  # the heartbeat is per update


@pytest.mark.slow  # 31 s: a real training process hangs and is restarted (test-fast run on a loaded box)
def test_restart_on_hang_resumes_from_the_last_checkpoint(tmp_path, receivers):
    """A real hang (drill at step 15) in a tiny run: the watchdog stops the step, the trainer resumes from the
    checkpoint of step 10 in the same process and finishes all 30 steps; the drill does not fire again."""
    alerts = receivers.alerts("json").model_copy(update={"email": None})
    guard = GuardConfig(hang_timeout_s=3, term_grace_s=20, restart_on_hang=True, max_hang_restarts=1,
                        inject=InjectConfig(step=15, kind="hang"))
    script = tmp_path / "trainer.py"
    script.write_text(_TRAINER)
    p = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), guard.model_dump_json(),
                        alerts.model_dump_json(), "30"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "restarts training after a hang (restart 1 of at most 1)" in p.stderr
    out = tmp_path / "run"
    ev = read_events(out / "events.jsonl")
    kinds = [e["kind"] for e in ev]
    assert kinds[0] == "started" and kinds[-1] == "finished", kinds
    i = kinds.index("hang")
    assert kinds.count("hang") == 1 and kinds.count("inject") == 1 and "restart" in kinds[i:], kinds
    assert {e["detail"].get("restarting") for e in ev if e["kind"] == "stopped"} == {True}  # trainer and watchdog
    again = [e for e in ev if e["kind"] == "started"][-1]
    assert again["detail"]["resumed"] and again["detail"]["restarts"] == 1 and again["step"] == 10
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "loss" in r] == list(range(1, 31))  # steps 11..15 redone, not duplicated
    final = json.loads((out / "checkpoints" / "step_00000030" / "state.json").read_text())
    assert final["sampler"] == [{"pos": 30}]  # no data skipped: the hang was not the data's fault
    posts = [json.loads(x["body"]) for x in receivers.posts]
    assert any(b["kind"] == "hang" and b["step"] == 15 for b in posts), [(b["kind"], b["step"]) for b in posts]
    assert any(b["kind"] == "stopped" and "restarting from the last checkpoint" in b["text"] + str(b.get("action"))
               for b in posts)


@pytest.mark.slow  # ~20 s (last full run): a training subprocess stopped by SIGTERM
def test_sigterm_preempts_with_a_checkpoint_and_a_preempted_alert(tmp_path, receivers):
    """SIGTERM (a Slurm preemption) with the guard on: the trainer finishes its step and saves it; the event and the
    alert say `preempted`, never `crashed` (neither the trainer nor the watchdog); a rerun resumes at that step."""
    alerts = receivers.alerts("json").model_copy(update={"email": None})
    p = _proc(tmp_path, GuardConfig(hang_timeout_s=60), alerts, 100000)
    out = tmp_path / "run"
    m = out / "metrics.jsonl"
    t_end = time.time() + 40
    while time.time() < t_end and not (m.is_file() and m.read_text().count("\n") >= 5):
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert "Preempted: preempted by SIGTERM after step" in err, err[-2000:]
    stop = [json.loads(x) for x in m.read_text().splitlines()][-1]["step"]
    assert (out / "checkpoints" / f"step_{stop:08d}" / "state.json").is_file()
    time.sleep(3)  # the watchdog polls every 2 s here: it must end quietly, not report a crash
    ev = read_events(out / "events.jsonl")
    assert [e["kind"] for e in ev] == ["started", "preempted"], ev
    assert ev[-1]["step"] == stop and ev[-1]["detail"]["signal"] == "SIGTERM"
    posts = [json.loads(x["body"]) for x in receivers.posts]
    assert [b["kind"] for b in posts] == ["started", "preempted"], posts
    assert posts[-1]["step"] == stop and "preempted by SIGTERM" in posts[-1]["text"]
    p = _proc(tmp_path, GuardConfig(hang_timeout_s=60), alerts, stop + 3)  # the same command resumes
    assert p.wait(timeout=60) == 0, p.stderr.read()[-2000:]
    ev = read_events(out / "events.jsonl")
    assert [e["kind"] for e in ev] == ["started", "preempted", "started", "finished"]
    assert ev[2]["step"] == stop and ev[2]["detail"]["resumed"]
    assert [json.loads(x)["step"] for x in m.read_text().splitlines()] == list(range(1, stop + 4))
