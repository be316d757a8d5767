"""A real one-machine Slurm cluster (scripts/slurm/local_cluster.sh: munged, slurmctld, slurmd) runs
scripts/slurm/pretrain.sbatch for 2 gloo ranks; a preemption warning (USR1 to the batch shell, as
`--signal=B:USR1@T` sends before the time limit) makes the ranks checkpoint the step in flight, the job is
requeued and resumes from it, and its losses equal the uninterrupted job's, with no step lost or logged twice.

Needs root and Debian's slurmctld, slurmd, slurm-client and munge (`make test` installs them as root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "scripts" / "slurm" / "local_cluster.sh"
SBATCH = ROOT / "scripts" / "slurm" / "pretrain.sbatch"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")

pytestmark = pytest.mark.slow  # two short 2-rank jobs under Slurm, one of them preempted and requeued


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to start a local Slurm cluster (slurmd runs jobs as their users)"
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol")
               if not (shutil.which(b) or Path("/usr/sbin", b).exists())]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurmctld slurmd "
                "slurm-client munge (`make test` does it as root)")
    return None


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A running one-machine cluster with all its state in a scratch folder; the environment to talk to it."""
    why = _why_not()
    if why:
        pytest.skip(why)
    d = tmp_path_factory.mktemp("slurm")
    r = subprocess.run([str(CLUSTER), "start", str(d)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.fail(f"local_cluster.sh start: {r.stderr.strip()}")
    env = dict(os.environ, SLURM_CONF=str(d / "slurm.conf"))
    yield env
    subprocess.run([str(CLUSTER), "stop", str(d)], capture_output=True, text=True, timeout=120)


def _job(env: dict[str, str], job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def _losses(out: Path) -> list[tuple[int, float]]:
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [(r["step"], r["loss"]) for r in recs if "loss" in r]


def test_sbatch_two_ranks_preempted_requeued_and_resumed(slurm: dict[str, str], pack: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    pk, tok = pack
    steps = 60
    env = dict(slurm, KAMADO_QUIET="1", KAMADO_NPROC_PER_NODE="2", KAMADO_PYTHON=sys.executable,
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    jobs = {}
    for name in ("whole", "cut"):
        r = subprocess.run([sys.executable, "-m", "kamado.cli", "pretrain", "--pack", str(pk), "--tokenizer", str(tok),
                            "--out", str(tmp_path / name), "--preset", "tiny", "--nproc", "2", "--steps", str(steps),
                            "--set", "model.overrides.num_hidden_layers=2", "--set", "train.seq_len=128",
                            "--set", "train.batch_size=4", "--set", "train.ckpt_every=10", "--set", "train.eval_every=0",
                            "--write-spec"], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        # both jobs at once: one CPU each (one thread per rank either way)
        r = subprocess.run(["sbatch", "--parsable", "--nodes", "1", "--cpus-per-task", "1",
                            "--output", str(tmp_path / f"{name}-%j.out"), str(SBATCH), str(tmp_path / name / "launch.json")],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        jobs[name] = r.stdout.strip().split(";")[0]
    cut = tmp_path / "cut"
    deadline = time.time() + 400
    while time.time() < deadline and not ((cut / "metrics.jsonl").is_file() and len(_losses(cut)) >= 3):
        assert _job(slurm, jobs["cut"]).get("JobState") not in TERMINAL, _job(slurm, jobs["cut"])
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR1", "--batch", jobs["cut"]], env=slurm, check=True)
    states: dict[str, str] = {}
    held = 0.0
    deadline = time.time() + 600
    while time.time() < deadline:
        for name, j in jobs.items():
            info = _job(slurm, j)
            states[name] = info.get("JobState", "")
            if name == "cut" and states[name] == "PENDING" and int(info.get("Restarts", "0")) >= 1 \
                    and info.get("Reason") == "BeginTime":
                # Slurm holds a requeued job 120 s; 5 s are enough here (slurmd refuses a job credential issued
                # in the same second as the revocation of the previous run's)
                held = held or time.time()
                if time.time() - held > 5:
                    subprocess.run(["scontrol", "update", f"JobId={j}", "StartTime=now"], env=slurm)
        if all(states.get(n) in TERMINAL for n in jobs):
            break
        time.sleep(0.5)
    logs = {n: "".join(p.read_text() for p in tmp_path.glob(f"{n}-*.out")) for n in jobs}
    assert states == {"whole": "COMPLETED", "cut": "COMPLETED"}, (states, logs["cut"][-3000:])
    assert int(_job(slurm, jobs["cut"])["Restarts"]) == 1
    log = logs["cut"]
    assert "got SIGUSR1: asking the ranks to finish their step" in log, log[-3000:]
    assert "run status preempted" in log and "requeueing" in log and "restart 1;" in log
    events = [json.loads(x) for x in (cut / "events.jsonl").read_text().splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds != ["started", "finished"], "the job finished before the warning reached it (a very fast machine?)"
    assert kinds == ["started", "preempted", "started", "finished"], kinds
    stop = events[1]["step"]
    assert 3 <= stop < steps and events[2]["step"] == stop and events[2]["detail"]["resumed"]  # no step lost
    assert json.loads((cut / "pretrain.json").read_text())["resumed_from"] == stop
    a, b = _losses(tmp_path / "whole"), _losses(cut)
    assert [s for s, _ in b] == list(range(1, steps + 1))  # every step once
    assert a == b  # bit-identical to the uninterrupted job
