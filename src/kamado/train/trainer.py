"""The one training loop, shared by pretraining and instruction tuning.

``Trainer(model, batches, cfg, out_dir).fit()`` (or ``train(...)``) runs AdamW with a warmup +
cosine/WSD schedule, gradient clipping and accumulation, a precision policy
(:mod:`kamado.train.precision`), the loss of :mod:`kamado.train.loss` (optional z-loss), activation
checkpointing and ``torch.compile``; logs every step to ``out_dir/metrics.jsonl``; checkpoints atomically
under ``out_dir/checkpoints/`` and resumes from the latest complete one, continuing on the exact next
batch. Run it under ``torchrun`` and it shards the model with FSDP2 over the data-parallel ranks.

The loop, in :meth:`Trainer.fit` (the callback phases of :mod:`kamado.train.callbacks` in brackets)::

    setup()                          [pre_setup] seed, place/shard the model, precision, loss, optimizer
    resume(checkpoint)               latest complete checkpoint (or a named one), else a fresh start; callbacks'
                                     state restored from it
    [pre_train]                      metric sinks opened, progress line, the run guard's `started`
    while step < cfg.steps:
        step()                       [pre_step] lr = lr_at(step) × [lr_factor] → micro-batches → loss, grad norm
                                     → [pre_optim_step] (False: no update) → optimizer update
        log, evaluate()              on their schedules ([log] to every callback: the metric sinks write it)
        [post_step]                  progress line, the guard's heartbeat; last the checkpointer saves on its
                                     schedule ([post_checkpoint_saved]) with every callback's state
        preemption signal on a rank? save(), raise Preempted (exit 75: resume with the same command)
    save(), export_hf()              final checkpoint and Hugging Face folder, then [post_train] ([on_error])

The LR of a step is computed once (schedule × the callbacks' factors), set on every param group and logged as
``lr``: the value the optimizer applied. Loss and norm in :class:`StepStats` are global (the same on every rank),
so a deterministic callback decides the same everywhere, as FSDP needs. :meth:`Trainer.rollback` (from
``pre_optim_step``) restores a checkpoint's weights but keeps the data position: the step in progress is
abandoned and the loop continues from the restored step (records logged after it stay in ``metrics.jsonl``).
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kamado.config import KamadoError, Preempted
from kamado.stage import DEFAULT_SEED
from kamado.train import checkpoint as ckpt
from kamado.train import distributed
from kamado.train.callbacks import Callback, Callbacks, Checkpointer, MetricSinks, ProgressLine
from kamado.train.config import TrainConfig
from kamado.train.export import export_hf, hf_config, is_peft
from kamado.train.loss import CausalLMLoss, fused_ce_applies
from kamado.train.optim import adamw, lr_at
from kamado.train.precision import Precision, to_float8


class BatchSource(Protocol):
    """What the trainer reads from: ``next_batch()`` -> {"input_ids", "labels"} LongTensors [B, T].

    Optional: ``set_step(step)`` before each step's batches, ``metrics()`` -> extra scalars to log.
    """

    def next_batch(self) -> dict[str, Any]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, d: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    steps: int
    tokens: int
    params: int
    trainable_params: int
    final_loss: float | None
    val_loss: float | None
    first_val_loss: float | None
    tokens_per_s: float  # median over the run's steps (all ranks together)
    tflops: float  # per device
    mfu: float
    peak_tflops: float
    wall_s: float
    resumed_from: int | None
    world_size: int
    precision: str
    checkpoint: str | None = None
    hf_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepStats:
    """One step as ``pre_optim_step`` sees it, after the backward and before the optimizer update."""

    step: int  # 1-based number of the step being taken
    loss: float  # mean cross-entropy per target token (all micro-batches and ranks)
    grad_norm: float  # total gradient norm before clipping
    lr: float  # the LR this step's update applies (schedule × callbacks' factors)


Valid = list[dict[str, Any]] | Callable[[], Iterable[dict[str, Any]]]


def _median(xs: list[float]) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])


def _mem_gb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB


def _apply_trainable(model: Any, trainable: Callable[[str], bool] | Iterable[str] | None) -> None:
    if trainable is None:
        return
    if callable(trainable):
        pred = trainable
    else:
        names = set(trainable)

        def pred(n: str) -> bool:
            return n in names
    for n, p in model.named_parameters():
        p.requires_grad_(bool(pred(n)))


class Trainer:
    """Trains ``model`` on ``batches`` per ``cfg``; see the module docstring.

    ``trainable``: a predicate on parameter names (or a set of names) choosing what is trained (LoRA);
    by default every parameter with ``requires_grad``. Labels of -100 are ignored by the loss, which is
    the mean over all non-ignored tokens of the optimizer step (all micro-batches and ranks together).
    ``hf_export``: folder for a Hugging Face export at the end (``tokenizer``: a tokenizer dir to copy
    in, or an object with ``save_pretrained``). ``callbacks``: see :mod:`kamado.train.callbacks`; they run after the
    trainer's metric sinks and progress line and before its checkpointer.
    """

    def __init__(self, model: Any, batches: BatchSource, cfg: TrainConfig, out_dir: Path, *,
                 valid: Valid | None = None, trainable: Callable[[str], bool] | Iterable[str] | None = None,
                 hf_export: Path | None = None, tokenizer: Any = None, description: str = "train",
                 quiet: bool | None = None, callbacks: Sequence[Callback] = ()) -> None:
        self.model, self.batches, self.cfg, self.out_dir = model, batches, cfg, Path(out_dir)
        self.valid, self.trainable, self.hf_export, self.tokenizer = valid, trainable, hf_export, tokenizer
        self.description, self.quiet = description, quiet
        self.sinks = MetricSinks()
        self.callbacks = Callbacks([self.sinks, ProgressLine(), *callbacks, Checkpointer()])
        self.seed = DEFAULT_SEED if cfg.seed is None else int(cfg.seed)
        self.ck_root = self.out_dir / "checkpoints"
        self.step_no = 0  # optimizer steps done
        self.resumed_from: int | None = None
        self.tokens_done = 0
        self.final_loss: float | None = None
        self.val_loss: float | None = None
        self.first_val_loss: float | None = None
        self._ready = False
        self._restores = 0  # resume() calls; a change during a step abandons that step (rollback)
        self.last_saved: int | None = None  # step of the last checkpoint this trainer saved or resumed from
        self._tok_s: list[float] = []
        self._tflops: list[float] = []
        self._preempt_signal: str | None = None  # set by a signal handler: stop after the step in flight

    # --- setup ---
    def setup(self) -> None:
        """Seed, place (and under torchrun shard) the model, build the precision policy, loss and optimizer."""
        if self._ready:
            return
        import torch

        self.t_start = time.perf_counter()
        d = self.dist = distributed.setup()
        self.callbacks.call("pre_setup", self)
        self._seed_everything(self.seed + d.rank)
        if d.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        per_step = d.world_size * self.cfg.grad_accum
        if self.cfg.batch_size % per_step:
            raise KamadoError(f"train.batch_size {self.cfg.batch_size} is not divisible by "
                              f"nproc × grad_accum = {per_step}")
        self.micro_batch = self.cfg.batch_size // per_step
        self._prepare_model()
        self.precision = Precision(self.model, self.cfg.precision, fsdp=d.enabled)
        self.opt = adamw(self.precision.opt_named(), self.cfg.optimizer)
        self.model.train()
        self.loss = CausalLMLoss(self.model, self.precision, z_loss=self.cfg.z_loss,
                                 fused=fused_ce_applies(self.model, self.cfg))
        self.forward = self.loss
        if self.cfg.compile:
            if d.enabled:
                for layer in getattr(getattr(self.model, "model", None), "layers", []):
                    layer.compile()
            else:
                self.forward = torch.compile(self.loss.__call__)
        self._ready = True

    @staticmethod
    def _seed_everything(seed: int) -> None:
        import random

        import numpy as np
        import torch

        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def _prepare_model(self) -> None:
        """Trainable set, KV cache off, activation checkpointing, device, FSDP2; ``model_config.json``."""
        import torch

        model, d = self.model, self.dist
        _apply_trainable(model, self.trainable)
        self.n_params = sum(p.numel() for p in model.parameters())
        self.n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if self.n_trainable == 0:
            raise KamadoError("no trainable parameters")
        mcfg = hf_config(model)
        if mcfg is not None and hasattr(mcfg, "use_cache"):
            mcfg.use_cache = False
        if self.cfg.activation_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.to(d.device)
        if self.cfg.precision == "fp8":
            to_float8(model)
        if d.enabled:
            if self.cfg.precision == "bf16-pure":
                for p in model.parameters():
                    p.data = p.data.to(torch.bfloat16)
            distributed.shard_model(model, self.cfg.precision)
        if d.is_main and mcfg is not None and hasattr(mcfg, "to_json_string") and not is_peft(model):
            (self.out_dir / "model_config.json").write_text(mcfg.to_json_string())  # for export_checkpoint

    # --- checkpoints ---
    def resume(self, checkpoint: Path | str | int | None = None, *, callbacks: bool = True) -> int | None:
        """Restore model, optimizer, batch source, RNG and (``callbacks``) the callbacks' state from a checkpoint;
        returns its step.

        ``checkpoint``: a checkpoint folder, a step number under ``out_dir/checkpoints``, or None for the
        latest complete one (None is returned when there is none). Called during a step (from a callback), that
        step is abandoned and training continues from the restored step: see :meth:`rollback`.
        """
        self.setup()
        path = self._checkpoint_path(checkpoint)
        if path is None:
            return None
        world = self.dist.world_size
        if ckpt.is_sharded(path):
            saved = int(ckpt.read_state(path).get("world_size", 0))
            if saved != world or not self.dist.enabled:
                raise KamadoError(f"{path}: a sharded checkpoint saved with {saved} ranks, now {world}; "
                                  "resume with the same --nproc (or export it: kamado export)")
            msd, osd, state = ckpt.load_sharded(path, *self.precision.sharded_state(self.opt))
            self.precision.load_sharded_state(self.opt, msd, osd)
        else:
            msd, osd, state = ckpt.load(path)
            if int(state.get("world_size", world)) != world:
                raise KamadoError(f"{path}: saved with {state.get('world_size')} ranks, now {world}; "
                                  "resume with the same --nproc")
            self.precision.load_model_state(msd)
            self.precision.load_optim_state(self.opt, osd)
        if state.get("sampler") is not None:
            self.batches.load_state_dict(state["sampler"][self.dist.rank])
        ckpt.set_rng_state(state["rng"][self.dist.rank])
        if callbacks:
            self.callbacks.load_state_dict(state.get("callbacks"))
        self.step_no = self.resumed_from = self.last_saved = int(state["step"])
        self.tokens_done = self.step_no * self.cfg.batch_size * self.cfg.seq_len
        self._restores += 1
        return self.step_no

    def rollback(self, checkpoint: Path) -> dict[str, Any]:
        """Go back to ``checkpoint``'s weights, optimizer and RNG but keep the data where it is (the batches since
        that checkpoint are skipped) and the callbacks' state as it is; called from ``pre_optim_step``, the step in
        progress is abandoned. The checkpoint's ``state.json`` then records the data position past the skipped
        window and the callbacks' state, so a later resume from it never replays that window. Returns
        ``{"sampler_from": [...], "sampler_to": [...]}`` (every rank's batch-source state then and now)."""
        here = self.batches.state_dict()
        sampler_to = distributed.gather_objects(here, self.dist)
        sampler_from = ckpt.read_state(checkpoint).get("sampler")
        self.resume(checkpoint, callbacks=False)
        self.batches.load_state_dict(here)
        return {"sampler_from": sampler_from, "sampler_to": sampler_to}

    def record_rollback(self, checkpoint: Path, sampler_to: list[Any]) -> None:
        """After :meth:`rollback` and the callbacks' bookkeeping: rewrite ``checkpoint``'s data position and
        callback state (rank 0), then wait for every rank."""
        if self.dist.is_main:
            ckpt.update_state(checkpoint, {"sampler": sampler_to, "callbacks": self.callbacks.state_dict()})
        distributed.barrier(self.dist)

    def _checkpoint_path(self, checkpoint: Path | str | int | None) -> Path | None:
        if checkpoint is None:
            return ckpt.latest(self.ck_root)
        if isinstance(checkpoint, int):
            found = dict(ckpt.list_checkpoints(self.ck_root))
            if checkpoint not in found:
                raise KamadoError(f"{self.ck_root}: no complete checkpoint at step {checkpoint} (have {sorted(found)})")
            return found[checkpoint]
        if not ckpt.is_complete(Path(checkpoint)):
            raise KamadoError(f"{checkpoint}: not a complete checkpoint (needs state.json and model.safetensors "
                              "or dcp/.metadata)")
        return Path(checkpoint)

    @property
    def sharded_checkpoints(self) -> bool:
        """Whether :meth:`save` writes sharded (DCP) checkpoints: ``checkpoint_format`` sharded, or auto under FSDP."""
        fmt = self.cfg.checkpoint_format
        if fmt == "sharded" and not self.dist.enabled:
            raise KamadoError("train.checkpoint_format: sharded needs more than one rank (FSDP); use auto or full")
        return fmt == "sharded" or (fmt == "auto" and self.dist.enabled)

    def save(self, step: int | None = None) -> Path | None:
        """Checkpoint (model, optimizer, every rank's batch source and RNG) as ``step`` (default: now).

        Under FSDP (``checkpoint_format`` auto or sharded) every rank writes its own shard with
        ``torch.distributed.checkpoint``; otherwise rank 0 writes the full state (see :mod:`kamado.train.checkpoint`).
        """
        s = self.step_no if step is None else step
        d = self.dist
        samplers = distributed.gather_objects(self.batches.state_dict(), d)
        rngs = distributed.gather_objects(ckpt.rng_state(), d)
        meta = {"world_size": d.world_size, "sampler": samplers, "rng": rngs, "seed": self.seed,
                "config": self.cfg.model_dump(mode="json"), "callbacks": self.callbacks.state_dict()}
        if self.sharded_checkpoints:  # every rank writes its own shard: no full gather
            msd, osd = self.precision.sharded_state(self.opt)
            path = ckpt.save_sharded(self.ck_root, s, msd, osd, meta, rank=d.rank, world_size=d.world_size,
                                     keep_last=self.cfg.keep_last, keep_every=self.cfg.keep_every)
        else:
            msd = self.precision.model_state()
            osd = self.precision.optim_state(self.opt)
            path = None
            if d.is_main:
                path = ckpt.save(self.ck_root, s, msd, osd, meta, keep_last=self.cfg.keep_last,
                                 keep_every=self.cfg.keep_every)
            distributed.barrier(d)
        self.last_saved = s
        self.callbacks.call("post_checkpoint_saved", self, s, path)
        return path

    # --- one step ---
    def step(self) -> dict[str, Any] | None:
        """One optimizer step; returns its metrics record (None: a callback rolled back, nothing was done)."""
        import torch

        d, step = self.dist, self.step_no
        t0 = time.perf_counter()
        self.callbacks.call("pre_step", self, step + 1)
        if hasattr(self.batches, "set_step"):
            self.batches.set_step(step)
        lr = self.lr_for(step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        micro = self._next_micro_batches()
        loss = self._forward_backward(micro)
        gn = self._clip_grads()
        restores = self._restores
        update = self.callbacks.pre_optim_step(self, StepStats(step + 1, loss, gn, lr))
        if self._restores != restores:  # a callback rolled back to a checkpoint: abandon this step
            self.opt.zero_grad(set_to_none=True)
            return None
        if update:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if update:
            self.precision.after_step()
        if d.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.step_no = step + 1
        self.final_loss = loss
        if update and not math.isfinite(loss):
            raise KamadoError(f"loss is {loss} at step {step + 1}: lower train.optimizer.lr or use fp32")
        seq = micro[-1][0].shape[1]
        return self._record(loss, lr, gn, time.perf_counter() - t0, seq) | ({} if update else {"skipped": True})

    def _clip_grads(self) -> float:
        """Total gradient norm (before clipping); scales the gradients only when it exceeds ``grad_clip``.

        Bit-identical to ``clip_grad_norm_`` (same norm, same fp32 coefficient) without its multiply-by-one of
        every gradient when no clipping is needed.
        """
        import torch

        params = self.precision.grads_params()
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if self.cfg.grad_clip > 0:
            coef = self.cfg.grad_clip / (norm + 1e-6)
            if float(coef.full_tensor() if hasattr(coef, "full_tensor") else coef) < 1.0:
                torch.nn.utils.clip_grads_with_norm_(params, self.cfg.grad_clip, norm)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def lr_for(self, step: int) -> float:
        """The LR of 0-based ``step``: the schedule (:func:`~kamado.train.optim.lr_at`) × the callbacks' factors."""
        cfg = self.cfg
        lr = lr_at(step, lr=cfg.optimizer.lr, min_lr=cfg.optimizer.min_lr, total=cfg.steps,
                   warmup=cfg.warmup_steps, schedule=cfg.schedule, decay_fraction=cfg.decay_fraction)
        f = self.callbacks.lr_factor(self, step + 1)
        return lr if f == 1.0 else lr * f

    def _to_device(self, b: dict[str, Any]) -> tuple[Any, Any, Any]:
        dev = self.dist.device
        ids = b["input_ids"].to(dev, non_blocking=True)
        labels = b.get("labels")
        labels = ids if labels is None else labels.to(dev, non_blocking=True)
        mask = b.get("attention_mask")
        return ids, labels, (None if mask is None else mask.to(dev))

    def _next_micro_batches(self) -> list[tuple[Any, Any, Any]]:
        cfg = self.cfg
        micro = [self._to_device(self.batches.next_batch()) for _ in range(cfg.grad_accum)]
        for ids, _, _ in micro:
            if ids.shape[0] != self.micro_batch:
                raise KamadoError(f"batch source gave {ids.shape[0]} sequences, expected {self.micro_batch} "
                                  f"(batch_size {cfg.batch_size} / ranks {self.dist.world_size} / "
                                  f"grad_accum {cfg.grad_accum})")
        return micro

    def _forward_backward(self, micro: list[tuple[Any, Any, Any]]) -> float:
        """Backward of the step's loss (mean over every target token of all micro-batches and ranks)."""
        d = self.dist
        n_local = sum(float((lab[:, 1:] != -100).sum()) for _, lab, _ in micro)
        n_global = distributed.all_reduce_sum([n_local], d)[0]
        loss_local = 0.0
        for i, (ids, labels, mask) in enumerate(micro):
            if d.enabled:
                self.model.set_requires_gradient_sync(i == len(micro) - 1)
            ce, z = self.forward(ids, labels, mask)
            scaled = (ce + self.cfg.z_loss * z) * (d.world_size / max(n_global, 1.0))
            scaled.backward()
            self.precision.after_backward()
            loss_local += float(ce.detach())
        return distributed.all_reduce_sum([loss_local], d)[0] / max(n_global, 1.0)

    def _record(self, loss: float, lr: float, gn: float, dt: float, seq: int) -> dict[str, Any]:
        world = self.dist.world_size
        ntok = self.micro_batch * self.cfg.grad_accum * world * seq
        self.tokens_done += ntok
        tps = ntok / dt
        tflops = self.flops_per_token * tps / world / 1e12
        if self.step_no > self._first_step + 1:  # the first step after (re)start includes warm-up / compilation
            self._tok_s.append(tps)
            self._tflops.append(tflops)
        rec: dict[str, Any] = {"step": self.step_no, "loss": loss, "lr": lr, "grad_norm": round(gn, 6),
                               "tokens": self.tokens_done, "tokens_per_s": round(tps, 1),
                               "tflops": round(tflops, 5), "mfu": round(tflops * 1e12 / self.peak, 5),
                               "mem_gb": round(_mem_gb(self.dist.device), 3), "step_s": round(dt, 4)}
        if hasattr(self.batches, "metrics"):
            rec |= {k: v for k, v in self.batches.metrics().items() if isinstance(v, int | float | str)}
        return rec

    # --- evaluation ---
    def evaluate(self) -> float | None:
        """Mean validation cross-entropy per target token (None without validation batches)."""
        import torch

        if self.valid is None:
            return None
        vb = list(self.valid() if callable(self.valid) else self.valid)[: max(0, self.cfg.eval_batches) or None]
        if not vb:
            return None
        d = self.dist
        self.model.eval()
        tot = n = 0.0
        with torch.no_grad():
            for r in range(math.ceil(len(vb) / d.world_size)):  # every rank runs the same forwards (FSDP)
                i = r * d.world_size + d.rank
                ids, labels, mask = self._to_device(vb[i if i < len(vb) else 0])
                ce, _ = self.loss(ids, labels, mask)
                if i < len(vb):
                    tot += float(ce)
                    n += float((labels[:, 1:] != -100).sum())
        self.model.train()
        tot, n = distributed.all_reduce_sum([tot, n], d)
        return tot / max(n, 1.0)

    # --- the loop ---
    def fit(self, resume_from: Path | str | int | None = None) -> TrainResult:
        """setup → resume (``resume_from``, else the latest checkpoint if ``cfg.resume``) → steps → export.

        A signal of ``cfg.preempt_signals`` only sets a flag; the loop ends after the step in flight (all ranks
        agree at each step boundary), saves that step and raises :class:`~kamado.config.Preempted`. A collective
        that lost another rank (its node died) raises a :class:`KamadoError` naming the checkpoint to resume from.
        The callbacks hear ``post_train`` at the end, or ``on_error`` with what was raised.
        """
        try:
            self.setup()
            try:
                with distributed.on_signals(self.cfg.preempt_signals, self._on_preempt_signal):
                    res = self._fit(resume_from)
            except RuntimeError as e:
                if self.dist.enabled and distributed.lost_peer(e):
                    raise KamadoError(self._lost_rank_message(e)) from e
                raise
        except BaseException as e:
            self.callbacks.call("on_error", self, e)
            raise
        self.callbacks.call("post_train", self, res)
        return res

    def _fit(self, resume_from: Path | str | int | None) -> TrainResult:
        cfg = self.cfg
        if (resume_from is None and not cfg.resume) or self.resume(resume_from) is None:
            if self.dist.is_main and self.ck_root.exists():
                ckpt.prune(self.ck_root, keep_last=cfg.keep_last, keep_every=cfg.keep_every)
        self._start_logging()
        while self.step_no < cfg.steps:
            rec = self.step()
            if rec is None:
                continue
            if self.due(cfg.log_every):
                self.log(rec)
            if self.valid is not None and cfg.eval_every > 0 and self.due(cfg.eval_every):
                self.val_loss = self.evaluate()
                self.log({"step": self.step_no, "val_loss": self.val_loss, "tokens": self.tokens_done})
            self.callbacks.call("post_step", self, rec)
            if self.step_no < cfg.steps and self._preempt_agreed():
                self._stop_preempted(saved=self.last_saved == self.step_no)
        if self.last_saved != cfg.steps and cfg.steps > self._first_step:
            self.save(cfg.steps)
        return self._result()

    def log(self, record: dict[str, Any]) -> None:
        """A record for the metric log: every callback's ``log`` (the metric sinks write it on rank 0)."""
        self.callbacks.call("log", self, record)

    # --- preemption and lost ranks ---
    def _on_preempt_signal(self, signum: int, frame: Any) -> None:
        """A signal handler: only note the signal; the loop acts on it at the next step boundary."""
        import signal

        self._preempt_signal = signal.Signals(signum).name

    def _preempt_agreed(self) -> bool:
        """Whether any rank got a preemption signal (one small all-reduce per step, so all ranks stop together)."""
        if not self.cfg.preempt_signals:
            return False
        return distributed.all_reduce_sum([float(self._preempt_signal is not None)], self.dist)[0] > 0

    def _stop_preempted(self, saved: bool) -> None:
        """Save the step just finished (every rank: sharded where FSDP shards) and raise Preempted."""
        if not saved:
            self.save()
        path = ckpt.step_dir(self.ck_root, self.step_no)
        sig = self._preempt_signal or "a preemption signal to another rank"
        raise Preempted(f"preempted by {sig} after step {self.step_no} of {self.cfg.steps}: saved the complete "
                        f"checkpoint {path}; the same command (or the requeued job) resumes from it with no step "
                        "lost", step=self.step_no, checkpoint=str(path), signal=sig)

    def _lost_rank_message(self, e: BaseException) -> str:
        cks = ckpt.list_checkpoints(self.ck_root)
        last = f"The last complete checkpoint is {cks[-1][1]} (step {cks[-1][0]})" if cks else "No checkpoint yet"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300].rstrip(". ")
        return (f"lost contact with another rank during step {self.step_no + 1} of {self.cfg.steps} (its process or "
                f"node died, or the network failed): {first}. {last}; launch all {self.dist.world_size} ranks again "
                "with the same command to resume from it")

    def due(self, every: int) -> bool:
        """Whether a thing done every ``every`` steps (and at the last) is due after this step."""
        return self.step_no % max(1, every) == 0 or self.step_no == self.cfg.steps

    def _start_logging(self) -> None:
        """FLOPs per token and device peak, the callbacks' ``pre_train``, and the validation loss before training."""
        from kamado.model.flops import device_peak, model_flops

        cfg = self.cfg
        self._first_step = self.step_no
        mcfg = hf_config(self.model)
        if mcfg is not None and hasattr(mcfg, "num_hidden_layers"):
            mf = model_flops(mcfg, cfg.seq_len)
            self.flops_per_token = mf.flops_per_token
            if self.n_trainable < self.n_params:  # frozen weights: no weight gradients (4N instead of 6N)
                self.flops_per_token -= 2.0 * (mf.non_embedding - min(mf.non_embedding, self.n_trainable))
        else:
            self.flops_per_token = 6.0 * self.n_params
        self.peak, self.peak_how = device_peak(cfg.precision, self.dist.device)  # one user-wide cache
        self.callbacks.call("pre_train", self)
        if self.step_no == 0 and self.valid is not None and cfg.eval_every > 0:
            self.first_val_loss = self.val_loss = self.evaluate()
            self.log({"step": 0, "val_loss": self.val_loss, "tokens": 0})

    def _result(self) -> TrainResult:
        """Export to Hugging Face (if asked) and sum the run up."""
        hf_dir = None
        if self.hf_export is not None:
            export_hf(self.model, Path(self.hf_export), tokenizer=self.tokenizer,
                      state=self.precision.model_state(), is_main=self.dist.is_main)
            hf_dir = str(self.hf_export)
        latest = ckpt.latest(self.ck_root)
        tps, tfl = _median(self._tok_s), _median(self._tflops)
        return TrainResult(steps=self.cfg.steps, tokens=self.tokens_done, params=self.n_params,
                           trainable_params=self.n_trainable, final_loss=self.final_loss, val_loss=self.val_loss,
                           first_val_loss=self.first_val_loss, tokens_per_s=round(tps, 1), tflops=round(tfl, 5),
                           mfu=round(tfl * 1e12 / self.peak, 5), peak_tflops=round(self.peak / 1e12, 4),
                           wall_s=round(time.perf_counter() - self.t_start, 2), resumed_from=self.resumed_from,
                           world_size=self.dist.world_size, precision=self.cfg.precision,
                           checkpoint=str(latest) if latest else None, hf_dir=hf_dir,
                           extra={"peak": self.peak_how, "flops_per_token": self.flops_per_token})


def train(model: Any, batches: BatchSource, cfg: TrainConfig, out_dir: Path, **kw: Any) -> TrainResult:
    """``Trainer(model, batches, cfg, out_dir, **kw).fit()``: the whole run, for callers that need no more."""
    return Trainer(model, batches, cfg, out_dir, **kw).fit()
