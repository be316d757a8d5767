"""Data parallelism: torchrun environment, process groups (gloo on CPU, NCCL on GPU) and FSDP2 sharding."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# torchrun's agent forwards these to its ranks (the default list lacks SIGUSR1/2, which would kill the agent) and
# waits STOP_GRACE_S for them to finish their step and checkpoint before SIGKILL (torchrun's default: 30 s)
AGENT_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1,SIGUSR2"
STOP_GRACE_S = 300


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def setup() -> Dist:
    """Join the process group torchrun described (if any); pick the device. Safe to call twice."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = "cpu"
    if torch.cuda.is_available() and os.environ.get("KAMADO_DEVICE", "") != "cpu":
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Dist(rank, world, local, device)


def teardown(ok: bool = True) -> None:
    """Leave the process group: after a barrier when ``ok``; without one after an error (a rank may be gone)."""
    import torch.distributed as dist

    if dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "gloo/transport",
         "NCCL communicator was aborted", "NCCL error", "collective operation timeout")


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` (raised by a collective) means another rank is gone: its process or node died, or the
    network between them failed (c10d's ``DistError``s, gloo's closed connections, NCCL aborts and timeouts)."""
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in _LOST)


def all_reduce_sum(values: list[float], d: Dist) -> list[float]:
    """Sum scalars over ranks (a no-op on one process)."""
    if not d.enabled:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=d.device if d.device != "cpu" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_max(values: list[float], d: Dist) -> list[float]:
    """Element-wise MAX of scalars over ranks, a NaN/inf counting as 1 (flags; a no-op on one process)."""
    if not d.enabled:
        return values
    import torch
    import torch.distributed as dist

    t = torch.nan_to_num(torch.tensor(values, dtype=torch.float32, device=d.device), nan=1.0, posinf=1.0, neginf=1.0)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def barrier(d: Dist) -> None:
    """Wait for every rank (a no-op on one process)."""
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def gather_objects(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj`` (small JSON-able values) on every rank."""
    if not d.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def shard_model(model: Any, precision: str, reshard_after_forward: bool = True) -> Any:
    """FSDP2: ``fully_shard`` each decoder layer, then the root. bf16 compute with fp32 master shards."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy()
    if precision in ("bf16", "fp8"):
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    layers = model.model.layers if hasattr(model, "model") and hasattr(model.model, "layers") else []
    for layer in layers:
        fully_shard(layer, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    return model


@contextlib.contextmanager
def on_signals(names: Sequence[str], handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for the signals ``names`` (e.g. "SIGTERM") while inside, the previous handlers afterwards.
    A no-op outside the main thread (Python installs handlers only there)."""
    prev: dict[int, Any] = {}
    try:
        if threading.current_thread() is threading.main_thread():
            for name in names:
                sig = getattr(signal, name)
                prev[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, h in prev.items():
            signal.signal(sig, h)


def torchrun_command(nproc: int, module_args: list[str], *, nnodes: int = 1, rdzv: str | None = None) -> list[str]:
    """``python -m torch.distributed.run`` for ``nproc`` ranks running ``python -m kamado.train.launch ARGS``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}",
           f"--signals-to-handle={AGENT_SIGNALS}", f"--shutdown-timeout={STOP_GRACE_S}"]
    if rdzv:
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv}"]
    else:
        cmd += ["--standalone"]
    return cmd + ["-m", "kamado.train.launch", *module_args]


def launch(nproc: int, module_args: list[str], *, log_dir: Path | None = None, env: dict[str, str] | None = None) -> int:
    """Run ``kamado.train.launch`` under torchrun with ``nproc`` local ranks; returns the exit code.

    SIGTERM, SIGUSR1/2 and SIGHUP to this process are passed on to torchrun, which passes them to the ranks
    (a preemption: they checkpoint and stop)."""
    import torch

    e = dict(os.environ)
    if not torch.cuda.is_available():
        e["OMP_NUM_THREADS"] = "1"  # one thread per rank: ranks share the cores
    e.setdefault("TORCHELASTIC_ERROR_FILE", str((log_dir or Path.cwd()) / "torchrun_error.json"))
    e |= env or {}
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        e["TMPDIR"] = str(log_dir)  # torchrun's scratch files
    cmd = torchrun_command(nproc, module_args)
    p = subprocess.Popen(cmd, env=e)
    try:
        with on_signals(("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP"), lambda sig, _: p.send_signal(sig)):
            rc = p.wait()
    finally:
        if log_dir is not None:
            for d in Path(log_dir).glob("torchelastic_*"):
                shutil.rmtree(d, ignore_errors=True)
    return rc
