"""Trainer callbacks: one protocol for everything that watches or steers a training run.

A :class:`Callback` has a method per phase; the :class:`~kamado.train.trainer.Trainer` calls them in this order::

    pre_build()                       before the model and data are built (by the caller: train.guard.run_guarded)
    pre_setup(trainer)                Trainer.setup, before the model is placed / sharded
    pre_train(trainer)                after setup and resume, before the first step
    for each step:
        pre_step(trainer, step)       before the step's batches (``step``: 1-based number of the step being taken)
        lr_factor(trainer, step)      multiplies the schedule's LR (optim.lr_at); the product is applied and logged
        pre_optim_step(trainer, st)   after the backward, before the update: False vetoes the update
        post_step(trainer, record)    the step's metrics record (only for a step that was taken)
        log(trainer, record)          every record written to the metric log (steps on log_every, val losses)
        post_checkpoint_saved(trainer, step, path)
    post_train(trainer, result)       after the final checkpoint and the HF export
    on_error(trainer, error)          instead of post_train when training raised (``trainer`` None: in the build)

``state_dict()``/``load_state_dict()``: a callback's own state, saved in every checkpoint's ``state.json`` under
``callbacks.<name>`` and restored on resume (not on a rollback, which keeps the callbacks' state as it is).
Callbacks run in list order: the trainer's metric sinks and progress line, then the caller's callbacks, then the
trainer's checkpointer, so a checkpoint holds every callback's state after that step's ``post_step``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kamado.train.trainer import StepStats, Trainer, TrainResult


class Callback:
    """No-op base: override the phases you need. ``name`` keys the callback's state in a checkpoint."""

    name = "callback"

    def pre_build(self) -> None: ...
    def pre_setup(self, trainer: Trainer) -> None: ...
    def pre_train(self, trainer: Trainer) -> None: ...
    def pre_step(self, trainer: Trainer, step: int) -> None: ...

    def lr_factor(self, trainer: Trainer, step: int) -> float:
        return 1.0

    def pre_optim_step(self, trainer: Trainer, stats: StepStats) -> bool | None:
        return None

    def post_step(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def log(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def post_checkpoint_saved(self, trainer: Trainer, step: int, path: Path | None) -> None: ...
    def post_train(self, trainer: Trainer, result: TrainResult) -> None: ...
    def on_error(self, trainer: Trainer | None, error: BaseException) -> None: ...

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Callbacks:
    """The callbacks of one trainer, called in order."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.items = list(callbacks)

    def __iter__(self) -> Iterator[Callback]:
        return iter(self.items)

    def call(self, phase: str, *args: Any) -> None:
        """``phase(*args)`` of every callback, in order."""
        for c in self.items:
            getattr(c, phase)(*args)

    def find(self, kind: type[Any]) -> Any:
        """The first callback of type ``kind`` (None: none)."""
        return next((c for c in self.items if isinstance(c, kind)), None)

    def lr_factor(self, trainer: Trainer, step: int) -> float:
        f = 1.0
        for c in self.items:
            f *= c.lr_factor(trainer, step)
        return f

    def pre_optim_step(self, trainer: Trainer, stats: StepStats) -> bool:
        """True unless a callback vetoes (every callback is asked, also after a veto)."""
        votes = [c.pre_optim_step(trainer, stats) for c in self.items]
        return all(v is not False for v in votes)

    def state_dict(self) -> dict[str, Any]:
        return {c.name: s for c in self.items if (s := c.state_dict()) is not None}

    def load_state_dict(self, states: dict[str, Any] | None) -> None:
        for c in self.items:
            if states and c.name in states:
                c.load_state_dict(states[c.name])


# ---------------------------------------------------------------- the trainer's own callbacks


class MetricSinks(Callback):
    """``metrics.jsonl`` (records after the resume step dropped) and the optional TensorBoard / W&B / MLflow sinks."""

    name = "metric_sinks"

    def pre_train(self, trainer: Trainer) -> None:
        from kamado.monitor.sinks import make_sinks

        cfg = trainer.cfg
        self.sinks = make_sinks(trainer.out_dir, resume_step=trainer.resumed_from, tensorboard=cfg.tensorboard,
                                wandb=cfg.wandb, mlflow=cfg.mlflow, config=cfg.model_dump(mode="json"),
                                enabled=trainer.dist.is_main)

    def log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.sinks.log(record)

    def wandb_run(self) -> Any:
        """The W&B run when a W&B sink is configured (alerts go through ``run.alert`` as well), else None."""
        for s in self.sinks.sinks if hasattr(self, "sinks") else []:
            if getattr(s, "_run", None) is not None:
                return s._run
        return None

    def close(self) -> None:
        if hasattr(self, "sinks"):
            self.sinks.close()

    def post_train(self, trainer: Trainer, result: TrainResult) -> None:
        self.close()

    def on_error(self, trainer: Trainer | None, error: BaseException) -> None:
        self.close()


class ProgressLine(Callback):
    """The progress bar on rank 0 (unless quiet): loss and tokens/s of each step."""

    name = "progress"

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._advance: Any = None
        self._shown = 0  # the step the line shows

    def pre_train(self, trainer: Trainer) -> None:
        from kamado import ui

        quiet = ui.quiet() if trainer.quiet is None else trainer.quiet
        if trainer.dist.is_main and not quiet:
            self._advance = self._stack.enter_context(ui.progress(trainer.description, total=trainer.cfg.steps))
            if trainer.step_no:
                self._advance(trainer.step_no)
            self._shown = trainer.step_no

    def post_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Show the step just logged (after a rollback that is an earlier step: the line goes back, not past
        ``steps``)."""
        if self._advance is not None:
            step = int(record["step"])
            self._advance(step - self._shown, loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}")
            self._shown = step

    def close(self) -> None:
        self._stack.close()
        self._advance = None

    def post_train(self, trainer: Trainer, result: TrainResult) -> None:
        self.close()

    def on_error(self, trainer: Trainer | None, error: BaseException) -> None:
        self.close()


class Checkpointer(Callback):
    """Saves every ``train.ckpt_every`` steps (and at the last); the other callbacks hear ``post_checkpoint_saved``."""

    name = "checkpointer"

    def post_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        cfg = trainer.cfg
        if cfg.ckpt_every > 0 and trainer.due(cfg.ckpt_every):
            trainer.save()
