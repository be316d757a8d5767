"""The run guard: detectors for non-finite values, loss spikes and gradient explosions; the policies
(skip an update, roll back and skip the data window, lower the LR, stop); events; fault drills.

The trainer calls it at a few seams (see :class:`RunGuard`)::

    g = RunGuard(cfg.guard, cfg.alerts, out_dir, run="tiny/pretrain", is_main=rank == 0)
    g.start(step)                              # events, `started` alert, watchdog, SIGTERM handler
    lr *= g.lr_factor(step)                    # drills (lr_spike) and the lowered LR after a rollback
    loss = g.inject_loss(step, loss)           # drill: nan
    verdict = g.check(step, loss, grad_norm)   # "ok" | "skip" | "rollback", the same on every rank
    g.step_done(step, record)                  # heartbeat for the watchdog; drill: hang
    g.finish(record) / g.fail(error)           # `finished` / `crashed` (`preempted`) alert, watchdog stopped

Detection (defaults after OLMo-core and llm-foundry; all configurable under ``guard``):

- ``nonfinite``: the loss or the gradient norm is NaN/inf.
- ``spike``: robust z-score of the loss against the last ``window`` good steps, ``(x - median) /
  (1.4826 · MAD)``, above ``z_threshold`` *and* the loss ``min_rise`` above the median; only after
  ``warmup`` good steps of history.
- ``grad_explosion``: the gradient norm above ``grad_factor`` × the median of the last good steps.

A bad step's update is skipped (its values never enter the history). ``patience`` bad steps in a
row is a persisting spike: roll back to the last checkpoint saved before the first bad step, keep
the data sampler where it is (the batches between that checkpoint and now are skipped, recorded in
``events.jsonl`` and never replayed, also after a resume), optionally train at ``rollback_lr_factor`` ×
the LR for ``rollback_lr_steps`` steps, and stop with a :class:`KamadoError` after ``max_rollbacks``.
Decisions are made on all ranks together: a small flag tensor is all-reduced (MAX) when
``torch.distributed`` is initialized, so no rank skips or rolls back alone.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal

from kamado.config import KamadoError, Preempted, StrictModel
from kamado.monitor.alerts import Alerter, AlertsConfig, clean

EVENTS = "events.jsonl"
HEARTBEAT = "heartbeat.json"
STATE = "guard_state.json"  # rollbacks and skipped data windows, for a resume
STOP = ".watchdog-stop"  # why the watchdog sent SIGTERM


class InjectConfig(StrictModel):
    """A fault drill: at optimizer step ``step`` (1-based, as in metrics.jsonl) inject ``kind``."""

    step: int
    kind: Literal["lr_spike", "nan", "hang"]
    factor: float = 1000.0  # lr_spike: the LR multiplier of that step


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
    startup_timeout_s: float = 1800.0  # the same before the first step (compilation, loading)
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


def all_ranks_max(flags: list[float], device: str = "cpu") -> list[float]:
    """Element-wise MAX of ``flags`` over all ranks (the flags themselves without a process group)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return flags
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flags
    import torch

    t = torch.tensor(flags, dtype=torch.float32, device=device)
    t = torch.nan_to_num(t, nan=1.0, posinf=1.0, neginf=1.0)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


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
        rec = clean({"step": step, "kind": kind, "detail": detail if detail is not None else {}, "time": time.time()})
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


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(clean(obj), ensure_ascii=False))
    os.replace(tmp, path)


class GuardStop(KamadoError):
    """The guard stopped the run (too many rollbacks, nothing to roll back to, or the watchdog: ``hang``)."""

    def __init__(self, message: str, *, hang: bool = False) -> None:
        super().__init__(message)
        self.hang = hang


class RunGuard:
    """Detect → skip / roll back → alert, for one training run; see the module docstring."""

    def __init__(self, cfg: GuardConfig | None, alerts: AlertsConfig | None, out_dir: Path, *, run: str = "",
                 is_main: bool = True, device: str = "cpu") -> None:
        self.cfg = cfg or GuardConfig()
        self.alerts_cfg = alerts or AlertsConfig()
        self.out_dir = Path(out_dir)
        self.run, self.is_main, self.device = run, is_main, device
        self.events = EventLog(self.out_dir / EVENTS, enabled=is_main)
        self.alerter = Alerter(self.alerts_cfg, run=run, enabled=is_main, on_failure=self._alert_failed)
        self.detector = Detector(self.cfg)
        self.streak = 0  # bad steps in a row
        self.first_bad: int | None = None  # 1-based step of the first bad step of the streak
        self.rollbacks = 0
        self.skipped = 0  # updates skipped
        self.skipped_windows: list[dict[str, Any]] = []
        self.lr_low_until = -1  # steps < this train at rollback_lr_factor × LR
        self.fired: set[str] = set()  # drills already injected ("kind@step")
        self.last: dict[str, Any] = {}
        self.last_step: int | None = None
        self.last_good_ckpt: str | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._old_term: Any = None
        self._started = False
        self.restarts = 0  # restarts after a hang so far (guard.restart_on_hang); set by run_restarting
        self.will_restart = False  # a hang stop is followed by a restart (the `stopped` alert says so)
        self.checkpoints: Any = None  # () -> [(step, path)] of complete checkpoints (set by the trainer side)

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    # ------------------------------------------------------------------ lifecycle

    def start(self, step: int, *, resumed: bool = False, total_steps: int | None = None) -> None:
        """The run begins at ``step`` (a fresh start clears events.jsonl; a resume reloads the guard's state)."""
        self._started = True
        self.last_step = step
        if resumed:
            try:
                self.load_state_dict(json.loads((self.out_dir / STATE).read_text()))
            except (OSError, json.JSONDecodeError):
                pass
            for e in self.events.read():
                if e.get("kind") == "inject" and isinstance(e.get("detail"), dict):
                    self.fired.add(f"{e['detail'].get('kind')}@{e.get('step')}")
        if not self.is_main:
            return
        (self.out_dir / STOP).unlink(missing_ok=True)
        if not resumed and not self.restarts:
            self.events.path.unlink(missing_ok=True)
            (self.out_dir / STATE).unlink(missing_ok=True)
        self.events.log(step, "started", {"resumed": resumed, "total_steps": total_steps, "pid": os.getpid(),
                                          "restarts": self.restarts})
        self.alerter.send("started", step, f"training {'resumed' if resumed else 'started'} "
                          f"({total_steps} steps)" + (f" after hang restart {self.restarts} of at most "
                                                      f"{self.cfg.max_hang_restarts}" if self.restarts else ""),
                          action="guard on" if self.enabled else "guard off")
        self._beat("starting", step)
        if self.cfg.watchdog:
            self._start_watchdog()
        if threading.current_thread() is threading.main_thread():
            self._old_term = signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, signum: int, frame: Any) -> None:
        why = self.out_dir / STOP
        if why.is_file():
            reason = why.read_text(encoding="utf-8").strip()
            why.unlink(missing_ok=True)
            raise GuardStop(f"the run guard's watchdog stopped training: {reason} (see {self.events.path}; "
                            "resume with the same command)", hang=True)
        if callable(self._old_term):  # the trainer's preemption handler: checkpoint after this step, then stop
            self._old_term(signum, frame)
            return
        raise GuardStop(f"stopped by SIGTERM after step {self.last_step}")

    def _start_watchdog(self) -> None:
        spec = {"pid": os.getpid(), "heartbeat": str(self.out_dir / HEARTBEAT), "events": str(self.events.path),
                "hang_timeout_s": self.cfg.hang_timeout_s, "startup_timeout_s": self.cfg.startup_timeout_s,
                "term_grace_s": self.cfg.term_grace_s, "run": self.run,
                "alerts": self.alerts_cfg.model_dump(mode="json")}
        path = self.out_dir / ".watchdog.json"
        write_json_atomic(path, spec)
        self._watchdog = subprocess.Popen([sys.executable, "-m", "kamado.monitor.watchdog", str(path)],
                                          start_new_session=True, stdin=subprocess.DEVNULL)

    def _beat(self, state: str, step: int | None, error: str | None = None) -> None:
        if not self.is_main:
            return
        hb = {"pid": os.getpid(), "state": state, "step": step, "time": time.time(), "metrics": self.last,
              "checkpoint": self.last_good_ckpt}
        if error:
            hb["error"] = error
        write_json_atomic(self.out_dir / HEARTBEAT, hb)

    def _stop_watchdog(self) -> None:
        w = self._watchdog
        if w is not None:
            try:
                w.wait(timeout=10)  # it exits by itself on a finished/failed heartbeat
            except subprocess.TimeoutExpired:
                w.terminate()
            self._watchdog = None
        if self._old_term is not None and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == self._on_term:  # else the trainer has restored its own since
                signal.signal(signal.SIGTERM, self._old_term)
            self._old_term = None

    def finish(self, step: int, record: dict[str, Any] | None = None) -> None:
        if not self.is_main:
            return
        self.events.log(step, "finished", {"rollbacks": self.rollbacks, "skipped_updates": self.skipped,
                                           "alert_failures": self.alerter.failures, **clean(record or {})})
        self.alerter.send("finished", step, "training finished", action=self._summary(),
                          checkpoint=self.last_good_ckpt, metrics=record or self.last)
        self._beat("finished", step)
        self._stop_watchdog()
        self.alerter.close(timeout=30)

    def fail(self, error: BaseException | str) -> None:
        if not self.is_main:
            return
        if isinstance(error, Preempted):
            self.preempted(error)
            return
        msg = str(error) or type(error).__name__ if not isinstance(error, str) else error
        kind = "stopped" if isinstance(error, GuardStop) else "crashed"
        restart = self.will_restart and isinstance(error, GuardStop) and error.hang
        self.events.log(self.last_step, kind, {"error": msg[:2000]} | ({"restarting": True} if restart else {}))
        self.alerter.send(kind, self.last_step, f"training ended with an error: {msg[:500]}",
                          action=(f"restarting from the last checkpoint (hang restart {self.restarts + 1} of at most "
                                  f"{self.cfg.max_hang_restarts}); " if restart else "") + self._summary(),
                          checkpoint=self.last_good_ckpt, metrics=self.last)
        self._beat("restarting" if restart else "failed", self.last_step, msg[:500])  # the watchdog lets go
        self._stop_watchdog()
        self.alerter.close(timeout=30)

    def preempted(self, error: Preempted) -> None:
        """The trainer stopped on a preemption signal with a complete checkpoint: a `preempted` event and alert
        (not `crashed`); the watchdog ends quietly."""
        self.last_step, self.last_good_ckpt = error.step, error.checkpoint
        self.events.log(error.step, "preempted", {"signal": error.signal, "checkpoint": error.checkpoint})
        self.alerter.send("preempted", error.step, f"preempted by {error.signal} after step {error.step}; the "
                          "complete checkpoint of that step is saved", action="resumes from it when the job is "
                          "requeued or the same command runs again; " + self._summary(),
                          checkpoint=error.checkpoint, metrics=self.last)
        self._beat("preempted", error.step)
        self._stop_watchdog()
        self.alerter.close(timeout=30)

    def _summary(self) -> str:
        return f"{self.rollbacks} rollback(s), {self.skipped} skipped update(s)"

    def _alert_failed(self, detail: dict[str, Any]) -> None:
        self.events.log(self.last_step, "alert_failed", detail)

    # ------------------------------------------------------------------ drills

    def _drill(self, step: int, kind: str) -> bool:
        inj = self.cfg.inject
        if inj is None or inj.kind != kind or inj.step != step or f"{kind}@{step}" in self.fired:
            return False
        self.fired.add(f"{kind}@{step}")
        self.events.log(step, "inject", {"kind": kind, "factor": inj.factor if kind == "lr_spike" else None})
        return True

    def lr_factor(self, step: int) -> float:
        """LR multiplier of 1-based ``step``: an lr_spike drill, or the lowered LR after a rollback."""
        f = 1.0
        if step < self.lr_low_until:
            f *= self.cfg.rollback_lr_factor
        if self._drill(step, "lr_spike"):
            f *= self.cfg.inject.factor  # type: ignore[union-attr]
        return f

    def inject_loss(self, step: int, loss: Any) -> Any:
        """The loss to back-propagate at 1-based ``step`` (NaN for a nan drill)."""
        if self._drill(step, "nan"):
            return loss * float("nan")
        return loss

    # ------------------------------------------------------------------ detection and policy

    def check(self, step: int, loss: float, grad_norm: float | None) -> str:
        """Verdict for 1-based ``step`` before its update: ``ok``, ``skip`` (drop the update) or ``rollback``."""
        if not self.enabled:
            return "ok"
        flags, info = self.detector.flags(loss, grad_norm)
        flags = all_ranks_max(flags, self.device)
        if not any(flags):
            self.streak, self.first_bad = 0, None
            self.detector.accept(loss, grad_norm)
            return "ok"
        kind = "nonfinite" if flags[0] else ("spike" if flags[1] else "grad_explosion")
        self.streak += 1
        if self.first_bad is None:
            self.first_bad = step
        verdict = "rollback" if self.streak >= max(1, self.cfg.patience) else "skip"
        self.skipped += verdict == "skip"
        detail = info | {"streak": self.streak, "first_bad_step": self.first_bad, "action": verdict}
        self.events.log(step, kind, detail)
        if self.streak == 1 or verdict == "rollback":
            self.alerter.send("spike" if kind == "grad_explosion" else kind, step,
                              f"{kind}: loss {loss}, grad norm {grad_norm}" + (f", z={info['z']}" if "z" in info else ""),
                              action=("rolling back" if verdict == "rollback" else "update skipped"),
                              checkpoint=self.last_good_ckpt, metrics=self.last)
        return verdict

    def ok_to_save(self) -> bool:
        """False during a bad streak: a checkpoint of possibly damaged weights is not written."""
        return self.streak == 0

    def rollback_target(self, checkpoints: list[tuple[int, Any]]) -> tuple[int, Any]:
        """The checkpoint to restore: the latest saved before the streak's first bad step.

        Raises :class:`GuardStop` after ``max_rollbacks`` or when there is none."""
        first = self.first_bad if self.first_bad is not None else (self.last_step or 0)
        # the loss of step s is computed on the weights after s - 1 updates: those are the first suspect ones
        good = [(s, p) for s, p in checkpoints if s < first - 1]
        if self.rollbacks >= self.cfg.max_rollbacks:
            raise GuardStop(f"loss spike at step {first} persisted and the run guard already rolled back "
                            f"{self.rollbacks} time(s) (guard.max_rollbacks): stopping. Lower the learning rate, "
                            f"check the data around the skipped windows in {self.events.path}, or resume from a "
                            "checkpoint with changed settings")
        if not good:
            raise GuardStop(f"loss spike at step {first} persisted for {self.streak} steps and there is no checkpoint "
                            "before it to roll back to (save more often: train.ckpt_every)")
        return good[-1]

    def rolled_back(self, step: int, to_step: int, checkpoint: Any, sampler_from: Any, sampler_to: Any) -> None:
        """Record a rollback from 1-based ``step`` to checkpoint ``to_step``; the data window is skipped."""
        self.rollbacks += 1
        win = {"from_step": to_step, "to_step": step, "first_bad_step": self.first_bad, "checkpoint": str(checkpoint),
               "sampler_from": sampler_from, "sampler_to": sampler_to}
        self.skipped_windows.append(win)
        if self.cfg.rollback_lr_factor != 1.0:
            self.lr_low_until = step + self.cfg.rollback_lr_steps
        self.streak, self.first_bad = 0, None
        self.last_good_ckpt = str(checkpoint)
        if self.is_main:
            write_json_atomic(self.out_dir / STATE, self.state_dict())
        self.events.log(step, "rollback", {**win, "rollbacks": self.rollbacks, "steps_lost": step - to_step,
                                           "lr_factor": self.cfg.rollback_lr_factor,
                                           "lr_low_until": self.lr_low_until})
        self.alerter.send("rollback", step, f"loss spike persisted; rolled back to step {to_step} and skipped the "
                          f"data of steps {to_step + 1}..{step} (rollback {self.rollbacks} of at most "
                          f"{self.cfg.max_rollbacks})", action=f"rolled back to {checkpoint}",
                          checkpoint=str(checkpoint), metrics=self.last)

    def step_done(self, step: int, record: dict[str, Any] | None = None, checkpoint: Any = None) -> None:
        """A finished 1-based step: heartbeat for the watchdog (and the hang drill, which never returns)."""
        self.last_step = step
        if record:
            self.last = {k: v for k, v in record.items() if k in ("loss", "grad_norm", "lr", "tokens", "val_loss")}
        if checkpoint is not None:
            self.last_good_ckpt = str(checkpoint)
        self._beat("running", step)
        if self._drill(step, "hang"):
            while True:  # the drill: a step that never finishes; the watchdog stops this process
                time.sleep(0.5)

    # ------------------------------------------------------------------ the trainer seam

    def __call__(self, trainer: Any, stats: Any) -> bool:
        """An update hook for :class:`kamado.train.trainer.Trainer` (``hooks=[guard]``): sees each step's loss
        and gradient norm before the optimizer update; False skips the update. On a persisting spike it rolls
        the trainer back (``trainer.resume(checkpoint)``) and puts the batch source back where it was, so the
        batches in between are skipped. Uses ``trainer.opt``, ``.batches``, ``.precision``, ``.ck_root``."""
        step = int(stats.step)
        if not self._started:
            for sink in getattr(getattr(trainer, "sinks", None), "sinks", []):
                if getattr(sink, "_run", None) is not None:  # W&B: alerts through run.alert as well
                    self.alerter.wandb_run = sink._run
            self.start(step - 1, resumed=getattr(trainer, "resumed_from", None) is not None,
                       total_steps=getattr(getattr(trainer, "cfg", None), "steps", None))
        f = self.lr_factor(step)
        if f != 1.0:
            for g in trainer.opt.param_groups:
                g["lr"] = stats.lr * f
        loss, gn = float(stats.loss), float(stats.grad_norm)
        if self._drill(step, "nan"):  # the drill: this step's loss and gradients are NaN
            loss = gn = float("nan")
            for p in trainer.precision.grads_params():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))
        self.last = {"loss": loss, "grad_norm": gn, "lr": stats.lr * f}
        verdict = self.check(step, loss, gn)
        if verdict == "rollback":
            self._rollback(trainer, step)
            return False
        self.step_done(step - 1)  # heartbeat: the previous step finished, this one reached its update
        return verdict == "ok"

    def _rollback(self, trainer: Any, step: int) -> None:
        cks = self.checkpoints() if self.checkpoints is not None else _list_checkpoints(trainer.ck_root)
        to_step, path = self.rollback_target(cks)
        here = trainer.batches.state_dict()
        sampler_to = _gather(here)
        try:
            sampler_from = json.loads((Path(path) / "state.json").read_text()).get("sampler")
        except (OSError, json.JSONDecodeError):
            sampler_from = None
        trainer.resume(path)
        trainer.batches.load_state_dict(here)  # the data window since the checkpoint stays behind us
        self.rolled_back(step, to_step, path, sampler_from, sampler_to)
        if self.is_main:  # a later resume from this checkpoint starts past the window as well
            rewrite_checkpoint_state(Path(path), {"sampler": sampler_to, "guard": self.state_dict()})
        _barrier()

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, Any]:
        return {"rollbacks": self.rollbacks, "skipped": self.skipped, "skipped_windows": self.skipped_windows,
                "lr_low_until": self.lr_low_until, "fired": sorted(self.fired), "detector": self.detector.state_dict()}

    def load_state_dict(self, d: dict[str, Any] | None) -> None:
        if not d:
            return
        self.rollbacks = int(d.get("rollbacks", 0))
        self.skipped = int(d.get("skipped", 0))
        self.skipped_windows = list(d.get("skipped_windows", []))
        self.lr_low_until = int(d.get("lr_low_until", -1))
        self.fired |= set(d.get("fired", []))
        self.detector.load_state_dict(d.get("detector", {}))


def rewrite_checkpoint_state(ckpt_dir: Path, updates: dict[str, Any]) -> None:
    """Update keys of a checkpoint's ``state.json`` atomically (after a rollback: the sampler position past
    the skipped window and the guard's state, so a resume from this checkpoint never replays that window)."""
    p = Path(ckpt_dir) / "state.json"
    st = json.loads(p.read_text())
    st.update(updates)
    tmp = p.with_name(f".state.json.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        json.dump(st, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def _list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete ``step_XXXXXXXX`` checkpoints (with state.json) under ``root``, oldest first."""
    out = []
    for p in Path(root).glob("step_*"):
        if p.name[5:].isdigit() and (p / "state.json").is_file():
            out.append((int(p.name[5:]), p))
    return sorted(out)


def _gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (JSON-able), on every rank."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return [obj]
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _barrier() -> None:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def run_restarting(make_guard: Any, fn: Any, *, can_restart: bool = True) -> Any:
    """:func:`guarded_run` with ``guard.restart_on_hang``: when the watchdog stopped a hung trainer (a
    :class:`GuardStop` with ``hang``), log a ``restart`` event and call ``fn`` again with a fresh guard from
    ``make_guard()``: ``fn`` builds its model and data anew and the trainer resumes from the latest complete
    checkpoint. At most ``guard.max_hang_restarts`` times; then (or without the setting) the error is raised.
    ``can_restart`` False (a torchrun rank: the other ranks cannot follow) leaves restarts to the launcher."""
    restarts, fired = 0, set()
    while True:
        guard = make_guard()
        guard.restarts, guard.fired = restarts, guard.fired | fired
        c = guard.cfg
        guard.will_restart = bool(can_restart and c.enabled and c.restart_on_hang and restarts < c.max_hang_restarts)
        try:
            return guarded_run(guard, fn)
        except GuardStop as e:
            if not (e.hang and guard.will_restart):
                raise
            restarts, fired = restarts + 1, guard.fired  # a hang drill that fired is not injected again
            if guard.is_main:
                guard.events.log(guard.last_step, "restart", {"restarts": restarts, "max": c.max_hang_restarts,
                                                              "reason": "hang", "checkpoint": guard.last_good_ckpt})
            print(f"kamado: the run guard restarts training after a hang (restart {restarts} of at most "
                  f"{c.max_hang_restarts}): {e}", file=sys.stderr, flush=True)


def guarded_run(guard: RunGuard, fn: Any, trainer_hooks_kw: str = "hooks") -> Any:
    """``fn(hooks=[guard])`` under the guard: ``finished`` on success, ``crashed``/``stopped`` on an error
    (re-raised). ``fn`` is a training call such as ``lambda **kw: train(model, batches, cfg, out, **kw)``."""
    try:
        res = fn(**{trainer_hooks_kw: [guard]})
    except BaseException as e:
        guard.fail(e)
        raise
    d = res.to_dict() if hasattr(res, "to_dict") else {}
    guard.finish(int(d.get("steps") or (guard.last_step or 0)),
                 {k: d.get(k) for k in ("final_loss", "val_loss", "tokens", "wall_s") if k in d})
    return res
