"""Multi-node torchrun for real: two torchrun agents (two "nodes", one rank each) meet through the c10d
rendezvous on 127.0.0.1 and train exactly like one agent with two ranks; a node lost mid-run ends the other
with a clear error and a relaunch resumes from the last checkpoint; a preemption signal to one rank stops all
ranks at the same step with a complete sharded checkpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from _train_driver import driver_command, losses, run_driver

from kamado.config import EXIT_PREEMPTED

pytestmark = pytest.mark.slow  # ~6 short torchrun runs of 2 gloo ranks

STEPS = 12


def spec(out: Path, text: Path, **kw: object) -> dict:
    train = dict(steps=STEPS, batch_size=4, seq_len=64, warmup_steps=3, eval_every=0, ckpt_every=4, keep_last=3,
                 seed=11, precision="fp32", optimizer={"lr": 3e-3, "min_lr": 3e-4})
    return {"out": str(out), "text": str(text), "train": train} | kw


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_agents(sp: dict, tmp: Path, nnodes: int = 2, tag: str = "agent") -> list[subprocess.Popen]:
    """``nnodes`` torchrun agents with one rank each, rendezvous c10d on 127.0.0.1; logs in tmp/<tag><i>.log."""
    cmd, env = driver_command(sp, tmp, 1, nnodes=nnodes, rdzv=f"127.0.0.1:{free_port()}")
    return [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=(tmp / f"{tag}{i}.log").open("w"))
            for i in range(nnodes)]


def wait_all(ps: list[subprocess.Popen], timeout: float = 300) -> list[int]:
    return [p.wait(timeout=timeout) for p in ps]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its ranks in sessions of their own)."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((int(e[5:]) for e in env if e.startswith(b"RANK=")), None)


def wait_steps(out: Path, n: int, ps: list[subprocess.Popen], timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and all(p.poll() is None for p in ps):
        if (out / "metrics.jsonl").is_file() and len(losses(out)) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run ended or stalled before step {n}")


@pytest.fixture(scope="module")
def text(data_root: Path) -> Path:
    return data_root / "en_text" / "tinyshakespeare.txt"


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory, text: Path) -> list[tuple[int, float]]:
    """One torchrun agent with two ranks (the uninterrupted run)."""
    tmp = tmp_path_factory.mktemp("one_agent")
    r = run_driver(spec(tmp / "out", text), tmp, nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    return losses(tmp / "out")


def test_two_agents_train_like_one_agent_with_two_ranks(tmp_path: Path, text: Path, ref) -> None:
    out = tmp_path / "out"
    assert wait_all(start_agents(spec(out, text), tmp_path)) == [0, 0], (tmp_path / "agent0.log").read_text()[-3000:]
    assert losses(out) == ref and [s for s, _ in ref] == list(range(1, STEPS + 1))  # exact, every step
    assert json.loads((out / "result.json").read_text())["world_size"] == 2


def test_lost_node_ends_with_a_clear_error_and_a_relaunch_resumes(tmp_path: Path, text: Path, ref) -> None:
    out = tmp_path / "out"
    agents = start_agents(spec(out, text, sleep=0.3), tmp_path)
    wait_steps(out, 6, agents)
    lost = agents[1]  # the node goes away: its agent and its rank, at once
    for pid in [lost.pid, *descendants(lost.pid)]:
        os.kill(pid, signal.SIGKILL)
    t0 = time.time()
    rc = agents[0].wait(timeout=120)
    lost.wait()
    log = (tmp_path / "agent0.log").read_text()
    assert rc != 0 and time.time() - t0 < 60
    assert "error: lost contact with another rank during step" in log, log[-3000:]
    assert "The last complete checkpoint is" in log and "launch all 2 ranks again" in log
    done = losses(out)[-1][0]
    last_ckpt = done // 4 * 4
    assert f"step_{last_ckpt:08d} (step {last_ckpt})" in log
    assert wait_all(start_agents(spec(out, text), tmp_path, tag="relaunch")) == [0, 0], \
        (tmp_path / "relaunch0.log").read_text()[-3000:]
    assert json.loads((out / "result.json").read_text())["resumed_from"] == last_ckpt
    assert losses(out) == ref


def test_preempting_one_rank_stops_both_at_one_step_with_a_sharded_checkpoint(tmp_path: Path, text: Path, ref) -> None:
    out = tmp_path / "out"
    cmd, env = driver_command(spec(out, text, sleep=0.15), tmp_path, nproc=2)
    agent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_steps(out, 5, [agent])
    rank1 = [p for p in descendants(agent.pid) if rank_of(p) == 1]
    assert len(rank1) == 1
    os.kill(rank1[0], signal.SIGUSR1)  # only rank 1 is told: the ranks agree at the next step boundary
    err = agent.communicate(timeout=120)[1]
    assert f"exitcode  : {EXIT_PREEMPTED}" in err, err[-3000:]  # torchrun's report of the ranks' exit
    stop = losses(out)[-1][0]
    assert "preempted by a preemption signal to another rank after step" in err or "preempted by SIGUSR1" in err
    ck = out / "checkpoints" / f"step_{stop:08d}"
    state = json.loads((ck / "state.json").read_text())
    assert state["format"] == "sharded" and len(list((ck / "dcp").glob("*.distcp"))) == 2
    r = run_driver(spec(out, text), tmp_path, nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "result.json").read_text())["resumed_from"] == stop
    assert losses(out) == ref
