"""A real two-node Ray cluster on this machine (``ray start --head`` + ``ray start --address``, each with its own
temp folder, stopped by process group): ``corpus clean`` and ``corpus dedup`` with ``--ray-address`` give
exactly the local executor's output."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive_nodes(address: str, env: dict) -> int:
    code = (f"import ray; ray.init(address={address!r}, log_to_driver=False); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    try:
        return int(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def _lines(folder: Path, sub: str) -> list[str]:
    out: list[str] = []
    for p in sorted((folder / sub).glob("*.jsonl.gz")):
        out += [x for x in gzip.open(p, "rt", encoding="utf-8").read().split("\n") if x]
    return sorted(out)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):  # each `ray start --block` leads its own process group: its daemons go with it
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.time() + 30
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_two_node_cluster_equals_local(tmp_path: Path, data_root: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kr2n", dir="/tmp"))  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(tmp / "drv")}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--block", "--num-cpus=1", "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([str(BIN / "ray"), "start", "--head", f"--port={port}", "--include-dashboard=false",
                                       f"--temp-dir={tmp / 'head'}", *common], env=env, start_new_session=True,
                                      stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT))
        deadline = time.time() + 90
        while _alive_nodes(address, env) < 1:
            assert time.time() < deadline and procs[0].poll() is None, (tmp_path / "head.log").read_text()
            time.sleep(2)
        procs.append(subprocess.Popen([str(BIN / "ray"), "start", f"--address={address}", f"--temp-dir={tmp / 'node2'}",
                                       *common], env=env, start_new_session=True,
                                      stdout=open(tmp_path / "node2.log", "w"), stderr=subprocess.STDOUT))
        while _alive_nodes(address, env) < 2:
            assert time.time() < deadline and procs[1].poll() is None, (tmp_path / "node2.log").read_text()
            time.sleep(2)

        inp = tmp_path / "in"
        inp.mkdir()
        docs = [json.loads(x) for x in (data_root / "ja_web_noisy" / "mc4ja_paragraphs_labeled.jsonl").open()]
        for k in range(4):  # four shards, so both nodes get work
            with open(inp / f"s{k}.jsonl", "w", encoding="utf-8") as f:
                for i, d in enumerate(docs[k::4]):
                    f.write(json.dumps({"id": f"{k}-{i}", "text": d["text"]}, ensure_ascii=False) + "\n")
                    if i % 50 == 0:  # exact copies for dedup
                        f.write(json.dumps({"id": f"{k}-{i}-copy", "text": d["text"]}, ensure_ascii=False) + "\n")
            (inp / f"s{k}.jsonl").open("a").write("{broken\n")
        kamado = str(BIN / "kamado")
        for job in ("clean", "dedup"):
            for ex in ("local", "ray"):
                cmd = [kamado, "corpus", job, str(inp), "--out", str(tmp_path / f"{job}-{ex}"), "--executor", ex,
                       "--workers", "2"]
                if ex == "ray":
                    cmd += ["--ray-address", address]
                r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
                assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
            for sub in ("kept", "rejected"):
                loc, ray_ = _lines(tmp_path / f"{job}-local", sub), _lines(tmp_path / f"{job}-ray", sub)
                assert loc and loc == ray_, (job, sub, len(loc), len(ray_))
    finally:
        _stop(procs)
