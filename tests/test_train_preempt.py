"""Preemption with real processes: on SIGUSR1 (or SIGTERM) the trainer finishes the step in flight, saves it and
exits with 75; the same command resumes with no step lost or redone, on exactly the uninterrupted curve."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _train_driver import driver_command, losses, run_driver

from kamado.config import EXIT_PREEMPTED


def spec(out: Path, text: Path, **train: object) -> dict:
    base = dict(steps=14, batch_size=4, seq_len=64, warmup_steps=3, eval_every=5, eval_batches=2, ckpt_every=5,
                keep_last=2, seed=11, optimizer={"lr": 3e-3, "min_lr": 3e-4})
    return {"out": str(out), "text": str(text), "valid_bytes": 8000, "train": base | train}


def wait_steps(p: subprocess.Popen, out: Path, n: int, timeout: float = 240) -> None:
    """Wait until ``out/metrics.jsonl`` logged ``n`` steps (the process still running)."""
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None:
        if (out / "metrics.jsonl").is_file() and len(losses(out)) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run ended or stalled before step {n}")


@pytest.fixture
def text(data_root: Path) -> Path:
    return data_root / "en_text" / "tinyshakespeare.txt"


@pytest.mark.slow
def test_preempted_run_saves_its_step_and_resumes_on_the_same_curve(tmp_path: Path, text: Path) -> None:
    """SIGUSR1 (what Slurm's `--signal=USR1@T` sends before the time limit); SIGTERM: tests/test_train_guard.py."""
    sig = signal.SIGUSR1
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    r = run_driver(spec(ref, text), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    cmd, env = driver_command(spec(cut, text) | {"sleep": 0.15}, tmp_path)
    p = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    wait_steps(p, cut, 7)  # between the checkpoints of steps 5 and 10
    p.send_signal(sig)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == EXIT_PREEMPTED, err[-3000:]
    done = losses(cut)
    stop = done[-1][0]
    assert 7 <= stop < 10 and f"preempted by {sig.name} after step {stop} of 14" in err
    state = json.loads((cut / "checkpoints" / f"step_{stop:08d}" / "state.json").read_text())
    assert state["step"] == stop  # the step in flight was finished and saved: nothing lost
    r = run_driver(spec(cut, text), tmp_path)  # the same command again
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((cut / "result.json").read_text())["resumed_from"] == stop
    assert losses(cut) == losses(ref)  # every step once, bit-identical to the uninterrupted run
    vals = lambda o: [json.loads(x).get("val_loss") for x in (o / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert vals(cut) == vals(ref)


def test_preempt_signals_off_keeps_the_default_action(tmp_path: Path, text: Path) -> None:
    cmd, env = driver_command(spec(tmp_path / "o", text, preempt_signals=[]) | {"sleep": 0.15}, tmp_path)
    p = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    wait_steps(p, tmp_path / "o", 2)
    p.send_signal(signal.SIGUSR1)
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGUSR1
