"""One training driver for the tests that run the real trainer in fresh processes (one process or ``torchrun``).

As a script: ``python _train_driver.py SPEC_JSON`` trains a 2-layer LLaMA on the bytes of ``spec["text"]``.
Spec keys: ``out``, ``text``, ``train`` (TrainConfig fields); optional ``max_bytes`` (default 200,000),
``valid_bytes`` (the last bytes held out as 2 validation batches; 0: none), ``sleep`` (seconds before each
batch), ``hf`` (export at the end), ``rollback_at``/``rollback_to`` (a guard-style rollback from inside a step).
Rank 0 writes ``result.json`` (the TrainResult plus ``rolled``: the steps rolled back to). Exits like
``kamado.train.launch``: 75 when preempted (a checkpoint of the last step saved), 2 with ``error: …`` on a
KamadoError (a lost rank), else 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def driver_command(spec: dict, tmp: Path, nproc: int = 1, *, nnodes: int = 1,
                   rdzv: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run this driver on ``spec`` (``nproc`` > 1: under torchrun, gloo, one
    thread per rank, torchrun's scratch files in ``tmp``). ``rdzv`` ("HOST:PORT"): the command of one torchrun
    agent (node) of ``nnodes`` meeting through the c10d rendezvous there, with ``nproc`` ranks of its own."""
    from kamado.train.distributed import AGENT_SIGNALS

    env = dict(os.environ, KAMADO_QUIET="1", PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, __file__, json.dumps(spec)]
    if rdzv:
        cmd[1:1] = ["-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc-per-node={nproc}",
                    "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv}", f"--rdzv-id=kamado-{rdzv.rsplit(':', 1)[1]}",
                    f"--signals-to-handle={AGENT_SIGNALS}"]
    elif nproc > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    if rdzv or nproc > 1:
        env |= {"OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}
    return cmd, env


def run_driver(spec: dict, tmp: Path, nproc: int = 1) -> subprocess.CompletedProcess:
    """Run this driver on ``spec`` in new processes and wait for it."""
    cmd, env = driver_command(spec, tmp, nproc)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)


def losses(out: Path) -> list[tuple[int, float]]:
    """``(step, loss)`` of every logged step in ``out/metrics.jsonl``, in order."""
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [(r["step"], r["loss"]) for r in recs if "loss" in r]


def main(spec: dict) -> None:
    from kamado.model.presets import build_model, llama_config
    from kamado.train.callbacks import Callback
    from kamado.train.config import TrainConfig
    from kamado.train.sources import TokenWindows, byte_tokens
    from kamado.train.trainer import Trainer

    out = Path(spec["out"])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cfg = TrainConfig(**spec["train"])
    toks = byte_tokens(spec["text"], spec.get("max_bytes", 200_000))
    held = int(spec.get("valid_bytes", 0))
    micro = cfg.batch_size // (world * cfg.grad_accum)
    model = build_model(llama_config("tiny", vocab_size=256, overrides=dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)),
        seed=7)
    src = TokenWindows(toks[:-held] if held else toks, cfg.seq_len, micro, seed=3, rank=rank, world_size=world,
                       grad_accum=cfg.grad_accum)
    valid = [TokenWindows(toks[-held:], cfg.seq_len, 2, seed=5).next_batch() for _ in range(2)] if held else None
    if spec.get("sleep"):
        nb = src.next_batch

        def slow() -> dict:
            time.sleep(spec["sleep"])
            return nb()

        src.next_batch = slow  # type: ignore[method-assign]
    rolled: list = []

    class Rollback(Callback):  # like the run guard: once, from inside a step
        def pre_optim_step(self, tr, stats) -> None:  # noqa: ANN001
            if spec.get("rollback_at") == stats.step and not rolled:
                rolled.append(tr.resume(spec["rollback_to"]))

    res = Trainer(model, src, cfg, out, valid=valid, hf_export=out / "hf" if spec.get("hf") else None,
                  callbacks=[Rollback()] if spec.get("rollback_at") else []).fit()
    if rank == 0:
        (out / "result.json").write_text(json.dumps(res.to_dict() | {"rolled": rolled}))


if __name__ == "__main__":
    from kamado.config import EXIT_PREEMPTED, KamadoError, Preempted

    try:
        main(json.loads(sys.argv[1]))
    except Preempted as e:
        print(f"kamado: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_PREEMPTED)
    except KamadoError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
