"""The run guard's parts below the trainer: its settings, the detectors, ``events.jsonl`` and :class:`GuardStop`.

The trainer-facing half (policies, drills, lifecycle alerts, the restart loop) is the
:class:`kamado.train.guard.Guard` callback; the watchdog process is :mod:`kamado.monitor.watchdog`.

Detection (defaults after OLMo-core and llm-foundry; all configurable under ``guard``):

- ``nonfinite``: the loss or the gradient norm is NaN/inf.
- ``spike``: robust z-score of the loss against the last ``window`` good steps, ``(x - median) /
  (1.4826 · MAD)``, above ``z_threshold`` *and* the loss ``min_rise`` above the median; only after
  ``warmup`` good steps of history.
- ``grad_explosion``: the gradient norm above ``grad_factor`` × the median of the last good steps.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator

from kamado.config import KamadoError, StrictModel
from kamado.jsonl import to_json_safe

EVENTS = "events.jsonl"
HEARTBEAT = "heartbeat.json"
STOP = ".watchdog-stop"  # why the watchdog sent SIGTERM


class InjectConfig(StrictModel):
    """A fault drill: at optimizer step ``step`` (1-based, as in metrics.jsonl) inject ``kind``. ``step: 0`` with
    ``kind: hang``: a hang during setup (after the model and data are built, before the first forward pass)."""

    step: int
    kind: Literal["lr_spike", "nan", "hang"]
    factor: float = 1000.0  # lr_spike: the LR multiplier of that step

    @model_validator(mode="after")
    def _step(self) -> InjectConfig:
        if self.step < 0 or (self.step == 0 and self.kind != "hang"):
            raise ValueError(f"guard.inject.step {self.step} with kind {self.kind}: steps count from 1 (as in "
                             "metrics.jsonl); step 0 is only for kind hang (a hang during setup)")
        return self


class GuardConfig(StrictModel):
    """The run guard (on by default): detectors, policies, the watchdog and fault drills."""

    enabled: bool = True
    window: int = 128  # good steps of loss / grad-norm history
    warmup: int = 32  # good steps before the spike and explosion detectors start
    z_threshold: float = 6.0
    min_rise: float = 0.1  # a spike is also at least this fraction above the median loss
    grad_factor: float = 10.0  # grad norm > factor × its median: an explosion
    patience: int = 3  # bad steps in a row (each update skipped) before a rollback
    max_rollbacks: int = 3  # then stop with an error
    rollback_lr_factor: float = 1.0  # LR multiplier for a while after a rollback (1: unchanged)
    rollback_lr_steps: int = 100
    watchdog: bool = True
    hang_timeout_s: float = 1800.0  # no finished step for this long: `hang` alert, the trainer is stopped
    startup_timeout_s: float = 1800.0  # the same before the first step: model and data loading, first compile
    term_grace_s: float = 15.0  # SIGTERM, then SIGKILL after this long
    restart_on_hang: bool = False  # after the watchdog stopped a hung trainer: resume from the last checkpoint
    max_hang_restarts: int = 3  # then the stage ends with the error
    inject: InjectConfig | None = None


def robust_z(x: float, hist: list[float]) -> tuple[float, float]:
    """(z, median) of ``x`` against ``hist`` by median and MAD (scaled to σ for normal data)."""
    med = statistics.median(hist)
    mad = statistics.median(abs(h - med) for h in hist)
    scale = max(1.4826 * mad, 1e-3 * abs(med), 1e-12)
    return (x - med) / scale, med


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


class Detector:
    """Per-step flags: [nonfinite, spike, grad_explosion] and the numbers behind them."""

    def __init__(self, cfg: GuardConfig) -> None:
        self.cfg = cfg
        self.loss: deque[float] = deque(maxlen=max(3, cfg.window))
        self.gnorm: deque[float] = deque(maxlen=max(3, cfg.window))

    def flags(self, loss: float, grad_norm: float | None) -> tuple[list[float], dict[str, Any]]:
        c = self.cfg
        info: dict[str, Any] = {"loss": loss, "grad_norm": grad_norm}
        nonfinite = not _finite(loss) or (grad_norm is not None and not _finite(grad_norm))
        spike = explode = False
        if not nonfinite and len(self.loss) >= max(3, c.warmup):
            z, med = robust_z(float(loss), list(self.loss))
            info |= {"z": round(z, 2), "median": round(med, 4)}
            spike = z > c.z_threshold and loss > med * (1 + c.min_rise)
        if not nonfinite and grad_norm is not None and len(self.gnorm) >= max(3, c.warmup):
            gmed = statistics.median(self.gnorm)
            info["grad_median"] = round(gmed, 4)
            explode = gmed > 0 and grad_norm > c.grad_factor * gmed
        return [float(nonfinite), float(spike), float(explode)], info

    def accept(self, loss: float, grad_norm: float | None) -> None:
        self.loss.append(float(loss))
        if grad_norm is not None:
            self.gnorm.append(float(grad_norm))

    def state_dict(self) -> dict[str, Any]:
        return {"loss": list(self.loss), "gnorm": list(self.gnorm)}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.loss.clear()
        self.loss.extend(float(x) for x in d.get("loss", []))
        self.gnorm.clear()
        self.gnorm.extend(float(x) for x in d.get("gnorm", []))


class EventLog:
    """``events.jsonl``: one ``{"step", "kind", "detail", "time"}`` per line, flushed at once."""

    def __init__(self, path: Path, enabled: bool = True, fresh: bool = False) -> None:
        self.path, self.enabled = Path(path), enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if fresh:
                self.path.unlink(missing_ok=True)
        self._lock = threading.Lock()

    def log(self, step: int | None, kind: str, detail: Any = None) -> dict[str, Any]:
        rec = to_json_safe({"step": step, "kind": kind, "detail": detail if detail is not None else {},
                            "time": time.time()}, nonfinite="string")
        if self.enabled:
            with self._lock, self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return rec

    def read(self) -> list[dict[str, Any]]:
        return read_events(self.path)


LIFECYCLE = ("started", "finished", "crashed", "stopped", "preempted")


def last_outcome(path: Path, since: int = 0) -> str | None:
    """The last of ``started``/``finished``/``crashed``/``stopped``/``preempted`` among the records of an
    ``events.jsonl`` from record ``since`` on (None: none): how the latest attempt ended, or that it is running."""
    kinds = [e.get("kind") for e in read_events(path)[since:] if e.get("kind") in LIFECYCLE]
    return kinds[-1] if kinds else None


def read_events(path: Path) -> list[dict[str, Any]]:
    """Records of an ``events.jsonl`` (a torn last line is ignored)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for ln in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:
            continue
    return out


class GuardStop(KamadoError):
    """The guard stopped the run (too many rollbacks, nothing to roll back to, or the watchdog: ``hang``);
    ``step`` and ``checkpoint``: the last finished step and the last good checkpoint, where known."""

    def __init__(self, message: str, *, hang: bool = False, step: int | None = None,
                 checkpoint: str | None = None) -> None:
        super().__init__(message)
        self.hang, self.step, self.checkpoint = hang, step, checkpoint
