"""AdamW with weight-decay groups, and learning-rate schedules (warmup + cosine, WSD, constant)."""

from __future__ import annotations

import math
from typing import Any


def param_groups(named: list[tuple[str, Any]], weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices (linear and embedding weights); never decay norms and biases (ndim < 2)."""
    decay = [p for n, p in named if p.ndim >= 2 and not n.endswith(".bias")]
    no_decay = [p for n, p in named if not (p.ndim >= 2 and not n.endswith(".bias"))]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def adamw(named: list[tuple[str, Any]], cfg: Any) -> Any:
    """torch AdamW over ``named`` params; fused kernel when asked and supported for the params' device."""
    import torch

    groups = param_groups(named, cfg.weight_decay)
    kw = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if cfg.fused:
        try:
            return torch.optim.AdamW(groups, fused=True, **kw)
        except (RuntimeError, ValueError):
            pass
    return torch.optim.AdamW(groups, foreach=True, **kw)


def lr_at(step: int, *, lr: float, min_lr: float, total: int, warmup: int, schedule: str,
          decay_fraction: float = 0.2) -> float:
    """Learning rate for optimizer step ``step`` (0-based); a pure function of the step, so resume is exact."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        span = max(1, total - warmup)
        t = min(1.0, (step - warmup) / span)
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t))
    if schedule == "wsd":  # warmup, stable, then linear decay over the last decay_fraction of steps
        start = int(total * (1 - decay_fraction))
        if step < start:
            return lr
        t = min(1.0, (step - start + 1) / max(1, total - start))
        return lr + (min_lr - lr) * t
    raise ValueError(f"unknown schedule {schedule!r}")
