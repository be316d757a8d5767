"""The run guard as a trainer callback, and the one restart loop.

:class:`Guard` (a :class:`~kamado.train.callbacks.Callback`) uses the detectors and events of
:mod:`kamado.monitor.guard`, the alerts of :mod:`kamado.monitor.alerts` and the watchdog of
:mod:`kamado.monitor.watchdog`; its phases::

    pre_build             the heartbeat says `starting`, the watchdog starts (so guard.startup_timeout_s covers
                          model and data loading and the first compile), SIGTERM handler
    pre_setup             drill: a hang during setup (inject step 0, kind hang)
    pre_train             `started` event and alert (a fresh start clears events.jsonl)
    lr_factor             the lowered LR after a rollback; drill: lr_spike
    pre_optim_step        drill: nan; detect → ok | skip (veto the update) | rollback (Trainer.rollback)
    post_step             heartbeat for the step just finished; drill: hang
    post_checkpoint_saved the last good checkpoint (named in alerts)
    post_train, on_error  `finished` / `stopped` / `crashed` / `preempted` event and alert; the watchdog lets go

A bad step's update is skipped (its values never enter the history). ``patience`` bad steps in a row is a
persisting spike: roll back to the last complete checkpoint saved before the first bad step, keep the data
sampler where it is (the batches between that checkpoint and now are skipped, recorded in ``events.jsonl`` and
never replayed, also after a resume), optionally train at ``rollback_lr_factor`` × the LR for
``rollback_lr_steps`` steps, and stop with a :class:`~kamado.monitor.guard.GuardStop` after ``max_rollbacks``.
Decisions are made on all ranks together (the flags are all-reduced with MAX), so no rank skips or rolls back
alone. The guard's state (history, rollbacks, skipped windows, drills fired) is saved in every checkpoint.

:func:`run_guarded` builds the model and data under a guard and trains; :func:`restarting` is the one restart
loop (``guard.restart_on_hang``) for an in-process run and for a torchrun launch alike.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from kamado.config import Preempted
from kamado.jsonl import to_json_safe
from kamado.monitor.alerts import Alerter, AlertsConfig
from kamado.monitor.guard import EVENTS, STOP, Detector, EventLog, GuardConfig, GuardStop, read_events
from kamado.monitor.watchdog import Watchdog
from kamado.train import checkpoint as ckpt
from kamado.train import distributed
from kamado.train.callbacks import Callback, MetricSinks
from kamado.train.distributed import Dist
from kamado.train.trainer import StepStats, Trainer, TrainResult

R = TypeVar("R")


class Guard(Callback):
    """Detect → skip / roll back → alert, for one training attempt; see the module docstring."""

    name = "guard"

    def __init__(self, cfg: GuardConfig | None, alerts: AlertsConfig | None, out_dir: Path, *, run: str = "",
                 dist: Dist | None = None, restarts: int = 0, will_restart: bool = False,
                 fired: Sequence[str] = ()) -> None:
        self.cfg = cfg or GuardConfig()
        self.alerts_cfg = alerts or AlertsConfig()
        self.out_dir, self.run = Path(out_dir), run
        self.dist = dist or Dist()
        is_main = self.dist.is_main
        self.events = EventLog(self.out_dir / EVENTS, enabled=is_main)
        self.alerter = Alerter(self.alerts_cfg, run=run, enabled=is_main, on_failure=self._alert_failed)
        self.watchdog = Watchdog(self.out_dir, enabled=is_main)
        self.detector = Detector(self.cfg)
        self.streak = 0  # bad steps in a row
        self.first_bad: int | None = None  # 1-based step of the first bad step of the streak
        self.rollbacks = 0
        self.skipped = 0  # updates skipped
        self.skipped_windows: list[dict[str, Any]] = []
        self.lr_low_until = -1  # steps < this train at rollback_lr_factor × LR
        self.fired: set[str] = set(fired)  # drills already injected ("kind@step")
        self.last: dict[str, Any] = {}
        self.last_step: int | None = None
        self.last_good_ckpt: str | None = None
        self.restarts = restarts  # restarts after a hang before this attempt (guard.restart_on_hang)
        self.will_restart = will_restart  # a hang stop is followed by a restart (the `stopped` alert says so)
        self._begun = self._ended = self._training = False
        self._saved_term: Any = None  # SIGTERM handler before the guard's
        self._chain: Any = None  # the handler the guard's passes a plain SIGTERM on to (the trainer's preemption)

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    # ------------------------------------------------------------------ phases

    def pre_build(self) -> None:
        """Before the model and data are built: heartbeat `starting`, the watchdog, the SIGTERM handler."""
        if self._begun:
            return
        self._begun = True
        if self.is_main:
            (self.out_dir / STOP).unlink(missing_ok=True)
            self._beat("starting", self.last_step)
            if self.cfg.watchdog:
                self.watchdog.start(events=self.events.path, hang_timeout_s=self.cfg.hang_timeout_s,
                                    startup_timeout_s=self.cfg.startup_timeout_s,
                                    term_grace_s=self.cfg.term_grace_s, run=self.run,
                                    alerts=self.alerts_cfg.model_dump(mode="json"))
        if threading.current_thread() is threading.main_thread():
            self._saved_term = self._chain = signal.signal(signal.SIGTERM, self._on_term)

    def pre_setup(self, trainer: Trainer) -> None:
        self.dist = trainer.dist
        self.pre_build()  # a trainer used without run_guarded
        if self._drill(0, "hang"):
            _hang()

    def pre_train(self, trainer: Trainer) -> None:
        """The run begins at the trainer's step (a fresh start clears events.jsonl; a resume restored our state)."""
        resumed = trainer.resumed_from is not None
        self.last_step, self._training = trainer.step_no, True
        sinks = trainer.callbacks.find(MetricSinks)
        self.alerter.wandb_run = sinks.wandb_run() if sinks is not None else None
        if threading.current_thread() is threading.main_thread():  # inside the trainer's preemption handler
            current = signal.getsignal(signal.SIGTERM)
            if current != self._on_term:
                self._chain = current
                signal.signal(signal.SIGTERM, self._on_term)
        if resumed:
            for e in self.events.read():  # a drill that fired after the checkpoint is not injected again
                if e.get("kind") == "inject" and isinstance(e.get("detail"), dict):
                    self.fired.add(f"{e['detail'].get('kind')}@{e.get('step')}")
        if not self.is_main:
            return
        if not resumed and not self.restarts:
            self.events.path.unlink(missing_ok=True)
        total = trainer.cfg.steps
        self.events.log(self.last_step, "started", {"resumed": resumed, "total_steps": total, "pid": os.getpid(),
                                                    "restarts": self.restarts})
        self.alerter.send("started", self.last_step, f"training {'resumed' if resumed else 'started'} "
                          f"({total} steps)" + (f" after hang restart {self.restarts} of at most "
                                                f"{self.cfg.max_hang_restarts}" if self.restarts else ""),
                          action="guard on" if self.enabled else "guard off")

    def lr_factor(self, trainer: Trainer, step: int) -> float:
        """LR multiplier of 1-based ``step``: the lowered LR after a rollback, or an lr_spike drill."""
        f = 1.0
        if step < self.lr_low_until:
            f *= self.cfg.rollback_lr_factor
        if self._drill(step, "lr_spike"):
            f *= self.cfg.inject.factor  # type: ignore[union-attr]
        return f

    def pre_optim_step(self, trainer: Trainer, stats: StepStats) -> bool:
        """The verdict on this step's loss and gradient norm: False skips the update; a persisting spike rolls
        the trainer back (and skips the data window since that checkpoint)."""
        step, loss, gn = stats.step, float(stats.loss), float(stats.grad_norm)
        if self._drill(step, "nan"):  # the drill: this step's loss and gradients are NaN
            loss = gn = float("nan")
            for p in trainer.precision.grads_params():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))
        self.last = {"loss": loss, "grad_norm": gn, "lr": stats.lr}
        verdict = self.check(step, loss, gn)
        if verdict == "rollback":
            self._rollback(trainer, step)
            return False
        return verdict == "ok"

    def post_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.step_done(int(record["step"]), record)

    def post_checkpoint_saved(self, trainer: Trainer, step: int, path: Path | None) -> None:
        self.last_good_ckpt = str(path or ckpt.step_dir(trainer.ck_root, step))

    def post_train(self, trainer: Trainer, result: TrainResult) -> None:
        d = result.to_dict()
        self.finish(int(d.get("steps") or (self.last_step or 0)),
                    {k: d.get(k) for k in ("final_loss", "val_loss", "tokens", "wall_s")})

    def on_error(self, trainer: Trainer | None, error: BaseException) -> None:
        self.fail(error)

    # ------------------------------------------------------------------ signals, heartbeat, end

    def _on_term(self, signum: int, frame: Any) -> None:
        why = self.out_dir / STOP
        if why.is_file():
            reason = why.read_text(encoding="utf-8").strip()
            why.unlink(missing_ok=True)
            raise GuardStop(f"the run guard's watchdog stopped training: {reason} (see {self.events.path}; "
                            "resume with the same command)", hang=True, step=self.last_step,
                            checkpoint=self.last_good_ckpt)
        if callable(self._chain):  # the trainer's preemption handler: checkpoint after this step, then stop
            self._chain(signum, frame)
            return
        if not self._training:  # before the first step nothing is lost: a preemption (requeue, resume)
            raise Preempted("preempted by SIGTERM before training began (while building or setting up); resume "
                            "with the same command", step=self.last_step or 0, checkpoint=self.last_good_ckpt,
                            signal="SIGTERM")
        raise GuardStop(f"stopped by SIGTERM after step {self.last_step}", step=self.last_step,
                        checkpoint=self.last_good_ckpt)

    def _beat(self, state: str, step: int | None, error: str | None = None) -> None:
        self.watchdog.beat(state, step, metrics=self.last, checkpoint=self.last_good_ckpt,
                           **({"error": error} if error else {}))

    def _release(self) -> None:
        """The watchdog ends (after the clean-end heartbeat) and SIGTERM goes back to its handler before ours."""
        self._ended = True
        self.watchdog.stop()
        if self._begun and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == self._on_term:  # else someone installed their own since
                signal.signal(signal.SIGTERM, self._saved_term if self._saved_term is not None else signal.SIG_DFL)
        self.alerter.close(timeout=30)

    def step_done(self, step: int, record: dict[str, Any] | None = None) -> None:
        """A finished 1-based step: heartbeat for the watchdog (and the hang drill, which never returns)."""
        self.last_step = step
        if record:
            self.last = {k: v for k, v in record.items() if k in ("loss", "grad_norm", "lr", "tokens", "val_loss")}
        self._beat("running", step)
        if self._drill(step, "hang"):
            _hang()

    def finish(self, step: int, record: dict[str, Any] | None = None) -> None:
        if self.is_main and not self._ended:
            self.events.log(step, "finished", {"rollbacks": self.rollbacks, "skipped_updates": self.skipped,
                                               "alert_failures": self.alerter.failures, **to_json_safe(record or {}, nonfinite="string")})
            self.alerter.send("finished", step, "training finished", action=self._summary(),
                              checkpoint=self.last_good_ckpt, metrics=record or self.last)
            self._beat("finished", step)
        self._release()

    def fail(self, error: BaseException | str) -> None:
        if isinstance(error, Preempted):
            self.preempted(error)
            return
        if self.is_main and not self._ended:
            msg = str(error) or type(error).__name__ if not isinstance(error, str) else error
            kind = "stopped" if isinstance(error, GuardStop) else "crashed"
            restart = self.will_restart and isinstance(error, GuardStop) and error.hang
            self.events.log(self.last_step, kind, {"error": msg[:2000]} | ({"restarting": True} if restart else {}))
            self.alerter.send(kind, self.last_step, f"training ended with an error: {msg[:500]}",
                              action=(f"restarting from the last checkpoint (hang restart {self.restarts + 1} of at "
                                      f"most {self.cfg.max_hang_restarts}); " if restart else "") + self._summary(),
                              checkpoint=self.last_good_ckpt, metrics=self.last)
            self._beat("restarting" if restart else "failed", self.last_step, msg[:500])  # the watchdog lets go
        self._release()

    def preempted(self, error: Preempted) -> None:
        """The trainer stopped on a preemption signal with a complete checkpoint: a `preempted` event and alert
        (not `crashed`); the watchdog ends quietly."""
        if self.is_main and not self._ended:
            self.last_step, self.last_good_ckpt = error.step, error.checkpoint
            self.events.log(error.step, "preempted", {"signal": error.signal, "checkpoint": error.checkpoint})
            self.alerter.send("preempted", error.step, f"preempted by {error.signal} after step {error.step}; the "
                              "complete checkpoint of that step is saved", action="resumes from it when the job is "
                              "requeued or the same command runs again; " + self._summary(),
                              checkpoint=error.checkpoint, metrics=self.last)
            self._beat("preempted", error.step)
        self._release()

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

    # ------------------------------------------------------------------ detection and policy

    def check(self, step: int, loss: float, grad_norm: float | None) -> str:
        """Verdict for 1-based ``step`` before its update: ``ok``, ``skip`` (drop the update) or ``rollback``."""
        if not self.enabled:
            return "ok"
        flags, info = self.detector.flags(loss, grad_norm)
        flags = distributed.all_reduce_max(flags, self.dist)
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
                            "checkpoint with changed settings", step=self.last_step, checkpoint=self.last_good_ckpt)
        if not good:
            raise GuardStop(f"loss spike at step {first} persisted for {self.streak} steps and there is no checkpoint "
                            "before it to roll back to (save more often: train.ckpt_every)", step=self.last_step)
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
        self.events.log(step, "rollback", {**win, "rollbacks": self.rollbacks, "steps_lost": step - to_step,
                                           "lr_factor": self.cfg.rollback_lr_factor,
                                           "lr_low_until": self.lr_low_until})
        self.alerter.send("rollback", step, f"loss spike persisted; rolled back to step {to_step} and skipped the "
                          f"data of steps {to_step + 1}..{step} (rollback {self.rollbacks} of at most "
                          f"{self.cfg.max_rollbacks})", action=f"rolled back to {checkpoint}",
                          checkpoint=str(checkpoint), metrics=self.last)

    def _rollback(self, trainer: Trainer, step: int) -> None:
        cks = [(s, p) for s, p in ckpt.list_checkpoints(trainer.ck_root) if ckpt.verify(p, deep=False) is None]
        to_step, path = self.rollback_target(cks)
        moved = trainer.rollback(path)
        self.rolled_back(step, to_step, path, moved["sampler_from"], moved["sampler_to"])
        trainer.record_rollback(path, moved["sampler_to"])  # a later resume from it starts past the window too

    # ------------------------------------------------------------------ persistence (in every checkpoint)

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


def _hang() -> None:
    """The hang drill: a step (or setup) that never finishes; the watchdog stops this process."""
    while True:
        time.sleep(0.5)


# ---------------------------------------------------------------- the run and its restarts


def restarting(attempt: Callable[[int, bool], R], cfg: GuardConfig, out_dir: Path, *, can_restart: bool = True,
               hung: Callable[[R, list[dict[str, Any]]], bool] | None = None,
               detail: dict[str, Any] | None = None) -> R:
    """The one restart loop of ``guard.restart_on_hang``: ``attempt(restarts, will_restart)`` again (resuming from
    the latest complete checkpoint) after the watchdog stopped a hang, at most ``guard.max_hang_restarts`` times.

    A hang is a :class:`GuardStop` with ``hang`` raised by ``attempt`` (training in this process), or ``hung(result,
    new events)`` true for what it returned (a torchrun launch: its exit code and events.jsonl). ``can_restart``
    False (a torchrun rank: the other ranks cannot follow) leaves restarts to the launcher."""
    events = Path(out_dir) / EVENTS
    restarts = 0
    while True:
        allowed = can_restart and cfg.enabled and cfg.restart_on_hang and restarts < cfg.max_hang_restarts
        seen = len(read_events(events))
        step, why, extra = None, "", {}
        try:
            res = attempt(restarts, allowed)
        except GuardStop as e:
            if not (e.hang and allowed):
                raise
            step, why, extra = e.step, f": {e}", {"checkpoint": e.checkpoint}
        else:
            if not (allowed and hung is not None and hung(res, read_events(events)[seen:])):
                return res
        restarts += 1
        EventLog(events).log(step, "restart", {"restarts": restarts, "max": cfg.max_hang_restarts, "reason": "hang",
                                               **extra, **(detail or {})})
        print(f"kamado: the run guard restarts training after a hang (restart {restarts} of at most "
              f"{cfg.max_hang_restarts}){why}", file=sys.stderr, flush=True)


def run_guarded(make_trainer: Callable[[list[Callback]], Trainer], cfg: GuardConfig | None,
                alerts: AlertsConfig | None, out_dir: Path, *, run: str = "", dist: Dist | None = None,
                can_restart: bool = True, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train under a :class:`Guard`: the guard (and ``callbacks``) hear ``pre_build`` first, then
    ``make_trainer(callbacks)`` builds the model and data and returns the Trainer, which is fitted. With
    ``guard.restart_on_hang``, a hang restarts the whole attempt (a fresh build, resumed by the trainer)."""
    cfg = cfg or GuardConfig()
    fired: set[str] = set()  # a hang drill that fired is not injected again after a restart

    def attempt(restarts: int, will_restart: bool) -> TrainResult:
        guard = Guard(cfg, alerts, out_dir, run=run, dist=dist, restarts=restarts, will_restart=will_restart,
                      fired=sorted(fired))
        cbs = [guard, *callbacks]
        try:
            for c in cbs:
                c.pre_build()
            try:
                trainer = make_trainer(cbs)
            except BaseException as e:  # the trainer's own errors reach the callbacks through Trainer.fit
                for c in cbs:
                    c.on_error(None, e)
                raise
            return trainer.fit()
        finally:
            fired.update(guard.fired)

    return restarting(attempt, cfg, out_dir, can_restart=can_restart)
