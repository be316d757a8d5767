"""Data parallelism: torchrun environment, process groups (gloo on CPU, NCCL on GPU) and FSDP2 sharding."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], d: Dist) -> list[float]:
    """Sum scalars over ranks (a no-op on one process)."""
    if not d.enabled:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=d.device if d.device != "cpu" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


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


def torchrun_command(nproc: int, module_args: list[str], *, nnodes: int = 1, rdzv: str | None = None) -> list[str]:
    """``python -m torch.distributed.run`` for ``nproc`` ranks running ``python -m kamado.train.launch ARGS``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}"]
    if rdzv:
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv}"]
    else:
        cmd += ["--standalone"]
    return cmd + ["-m", "kamado.train.launch", *module_args]


def launch(nproc: int, module_args: list[str], *, log_dir: Path | None = None, env: dict[str, str] | None = None) -> int:
    """Run ``kamado.train.launch`` under torchrun with ``nproc`` local ranks; returns the exit code."""
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
    r = subprocess.run(cmd, env=e)
    if log_dir is not None:
        for p in Path(log_dir).glob("torchelastic_*"):
            shutil.rmtree(p, ignore_errors=True)
    return r.returncode
