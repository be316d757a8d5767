"""The training engine with real processes: SIGKILL + resume is bit-identical; 2 gloo ranks match 1 rank."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _train_driver import driver_command, losses, run_driver


def _spec(out: Path, text: Path, **train: object) -> dict:
    base = dict(steps=14, batch_size=4, seq_len=64, warmup_steps=3, eval_every=5, eval_batches=2, ckpt_every=3,
                keep_last=2, seed=11, optimizer={"lr": 3e-3, "min_lr": 3e-4})
    return {"out": str(out), "text": str(text), "valid_bytes": 8000, "train": base | train}


def _run(spec: dict, tmp: Path, nproc: int = 1) -> None:
    r = run_driver(spec, tmp, nproc)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture
def text(data_root: Path) -> Path:
    return data_root / "en_text" / "tinyshakespeare.txt"


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path: Path, text: Path) -> None:
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    _run(_spec(ref, text), tmp_path)
    kill_at = random.Random().randint(4, 11)
    spec = _spec(killed, text) | {"sleep": 0.15}
    cmd, env = driver_command(spec, tmp_path)
    p = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        m = killed / "metrics.jsonl"
        if m.is_file() and any(s >= kill_at for s, _ in losses(m.parent)):
            break
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = losses(killed)
    assert done and done[-1][0] < 14
    _run(spec | {"sleep": 0}, tmp_path)  # resumes from the latest complete checkpoint
    res = json.loads((killed / "result.json").read_text())
    assert res["resumed_from"] is not None and res["resumed_from"] <= done[-1][0]
    assert losses(killed) == losses(ref)  # exact float equality, every step
    vals = lambda o: [json.loads(x).get("val_loss") for x in (o / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert vals(killed) == vals(ref)


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path: Path, text: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    kw = dict(steps=6, precision="fp32", eval_every=3, ckpt_every=3)
    _run(_spec(one, text, **kw), tmp_path)
    _run(_spec(two, text, **kw), tmp_path, nproc=2)
    a, b = losses(one), losses(two)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 7))
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert y == pytest.approx(x, rel=2e-5, abs=2e-5)
    assert a[-1][1] < a[0][1]
    ra, rb = (json.loads((o / "result.json").read_text()) for o in (one, two))
    assert rb["world_size"] == 2 and ra["world_size"] == 1
    assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=2e-5)
    # the 2-rank checkpoint holds the full model, loadable without FSDP
    from kamado.train import checkpoint as ckpt

    msd, osd, state = ckpt.load(ckpt.latest(two / "checkpoints"))
    ref, _, _ = ckpt.load(ckpt.latest(one / "checkpoints"))
    assert set(msd) == set(ref) and state["world_size"] == 2 and len(state["sampler"]) == 2
    for k in ref:
        assert msd[k].shape == ref[k].shape
        assert (msd[k] - ref[k]).abs().max().item() < 1e-4


@pytest.mark.slow
def test_fused_output_loss_under_fsdp_equals_plain(tmp_path: Path, text: Path) -> None:
    """2 gloo ranks (FSDP2, bf16 compute, z-loss on): the fused output layer + cross-entropy, computed as the
    root forward's ``lm_head`` call, trains like the plain logits path, step by step."""
    fused, plain = tmp_path / "fused", tmp_path / "plain"
    kw = dict(steps=5, precision="bf16", z_loss=1e-3, eval_every=0, ckpt_every=5)
    _run(_spec(fused, text, **kw), tmp_path, nproc=2)
    _run(_spec(plain, text, fused_ce=False, **kw), tmp_path, nproc=2)
    a, b = losses(fused), losses(plain)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 6))
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-2)
    assert a[-1][1] < a[0][1]
    from kamado.train import checkpoint as ckpt

    fa, fb = ckpt.latest(fused / "checkpoints"), ckpt.latest(plain / "checkpoints")
    assert ckpt.is_sharded(fa) and ckpt.is_sharded(fb)
