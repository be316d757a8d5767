"""The one training loop, shared by pretraining and instruction tuning.

``train(model, batches, cfg, out_dir)`` runs AdamW with a warmup + cosine/WSD schedule, gradient
clipping and accumulation, a precision mode, optional z-loss, activation checkpointing and
``torch.compile``; logs every step to ``out_dir/metrics.jsonl``; checkpoints atomically under
``out_dir/checkpoints/`` and resumes from the latest complete one, continuing on the exact next batch.

Precision modes (``cfg.precision``):
  fp32           fp32 weights and math.
  bf16           bf16 weights for compute, fp32 master weights and optimizer state (one process: a
                 bf16 copy of the model plus fp32 masters; FSDP2: ``MixedPrecisionPolicy(bf16)``).
  bf16-autocast  fp32 weights, matmuls under ``torch.autocast(bfloat16)``.
  bf16-pure      bf16 weights and optimizer state, no master copy (fastest, least exact).
Run it under ``torchrun`` and it shards the model with FSDP2 over the data-parallel ranks.
"""

from __future__ import annotations

import contextlib
import math
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kamado.config import KamadoError
from kamado.train import checkpoint as ckpt
from kamado.train import distributed
from kamado.train.optim import adamw, lr_at


class BatchSource(Protocol):
    """What the engine reads from: ``next_batch()`` -> {"input_ids", "labels"} LongTensors [B, T]."""

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


def _unwrap(model: Any) -> Any:
    return getattr(model, "_orig_mod", model)


def _config(model: Any) -> Any:
    m = _unwrap(model)
    cfg = getattr(m, "config", None)
    if cfg is not None and hasattr(m, "get_base_model"):  # peft
        cfg = m.get_base_model().config
    return cfg


class _Precision:
    """Owns the parameters the optimizer steps and moves gradients/weights between model and masters."""

    def __init__(self, model: Any, mode: str, fsdp: bool) -> None:
        import torch

        self.model, self.mode, self.fsdp = model, mode, fsdp
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.master: dict[str, Any] | None = None
        if mode == "bf16" and not fsdp:
            self.master = {n: torch.nn.Parameter(p.detach().float().clone()) for n, p in self.named}
        if mode in ("bf16", "bf16-pure") and not fsdp:
            for p in model.parameters():
                p.data = p.data.to(torch.bfloat16)

    def opt_named(self) -> list[tuple[str, Any]]:
        if self.master is not None:
            return list(self.master.items())
        return self.named

    def autocast(self) -> Any:
        import torch

        if self.mode == "bf16-autocast":
            dev = "cuda" if next(self.model.parameters()).is_cuda else "cpu"
            return torch.autocast(dev, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def after_backward(self) -> None:
        """Move bf16 grads into the fp32 masters (accumulating over micro-batches)."""
        if self.master is None:
            return
        for n, p in self.named:
            if p.grad is None:
                continue
            m = self.master[n]
            if m.grad is None:
                m.grad = p.grad.float()
            else:
                m.grad.add_(p.grad)
            p.grad = None

    def after_step(self) -> None:
        import torch

        if self.master is None:
            return
        with torch.no_grad():
            torch._foreach_copy_([p for _, p in self.named], [self.master[n] for n, _ in self.named])

    def grads_params(self) -> list[Any]:
        return [p for _, p in self.opt_named()]

    # --- checkpoint state: full (unsharded) tensors keyed by parameter name ---
    def model_state(self) -> dict[str, Any]:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        out = {}
        for n, p in self.model.named_parameters():
            out[n] = self.master[n].detach() if self.master is not None and n in self.master else p.detach()
        return out

    def load_model_state(self, sd: dict[str, Any]) -> None:
        import torch

        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(self.model, sd, options=StateDictOptions(full_state_dict=True))
            return
        names = dict(self.model.named_parameters())
        missing = set(names) - set(sd)
        if missing:
            raise KamadoError(f"checkpoint lacks parameters: {sorted(missing)[:5]}")
        with torch.no_grad():
            for n, p in names.items():
                p.copy_(sd[n])
                if self.master is not None and n in self.master:
                    self.master[n].copy_(sd[n])

    def optim_state(self, opt: Any) -> dict[str, Any]:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(self.model, opt,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return opt.state_dict()

    def load_optim_state(self, opt: Any, sd: dict[str, Any]) -> None:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, opt, sd, options=StateDictOptions(full_state_dict=True))
            return
        opt.load_state_dict(sd)


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


def train(
    model: Any,
    batches: BatchSource,
    cfg: Any,
    out_dir: Path,
    *,
    valid: list[dict[str, Any]] | Callable[[], Iterable[dict[str, Any]]] | None = None,
    trainable: Callable[[str], bool] | Iterable[str] | None = None,
    hf_export: Path | None = None,
    tokenizer: Any = None,
    cache_dir: Path | None = None,
    description: str = "train",
    quiet: bool | None = None,
) -> TrainResult:
    """Train ``model`` on ``batches`` per ``cfg`` (a TrainConfig); see the module docstring.

    ``trainable``: a predicate on parameter names (or a set of names) choosing what is trained (LoRA);
    by default every parameter with ``requires_grad``. Labels of -100 are ignored by the loss, which is
    the mean over all non-ignored tokens of the optimizer step (all micro-batches and ranks together).
    ``hf_export``: folder for a Hugging Face export at the end (``tokenizer``: a tokenizer dir to copy
    in, or an object with ``save_pretrained``).
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from kamado import ui
    from kamado.model.flops import device_peak, model_flops
    from kamado.monitor.sinks import make_sinks

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    d = distributed.setup()
    seed = 1234 if cfg.seed is None else int(cfg.seed)
    torch.manual_seed(seed + d.rank)
    np.random.seed((seed + d.rank) % 2**32)
    import random

    random.seed(seed + d.rank)
    if d.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    world = d.world_size
    per_step = world * cfg.grad_accum
    if cfg.batch_size % per_step:
        raise KamadoError(f"train.batch_size {cfg.batch_size} is not divisible by nproc × grad_accum = {per_step}")

    _apply_trainable(model, trainable)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n_trainable == 0:
        raise KamadoError("no trainable parameters")
    mcfg = _config(model)
    if mcfg is not None and hasattr(mcfg, "use_cache"):
        mcfg.use_cache = False
    if cfg.activation_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(d.device)
    if d.enabled:
        if cfg.precision == "bf16-pure":
            for p in model.parameters():
                p.data = p.data.to(torch.bfloat16)
        distributed.shard_model(model, cfg.precision)
    if d.is_main and mcfg is not None and hasattr(mcfg, "to_json_string") and not hasattr(_unwrap(model), "peft_config"):
        (out_dir / "model_config.json").write_text(mcfg.to_json_string())  # for export_checkpoint
    prec = _Precision(model, cfg.precision, fsdp=d.enabled)
    opt = adamw(prec.opt_named(), cfg.optimizer)
    model.train()

    # --- resume ---
    ck_root = out_dir / "checkpoints"
    start = 0
    resumed_from = None
    last_ck = ckpt.latest(ck_root) if getattr(cfg, "resume", True) else None
    if last_ck is not None:
        msd, osd, state = ckpt.load(last_ck)
        if int(state.get("world_size", world)) != world:
            raise KamadoError(f"{last_ck}: saved with {state.get('world_size')} ranks, now {world}; "
                              "resume with the same --nproc")
        prec.load_model_state(msd)
        prec.load_optim_state(opt, osd)
        if state.get("sampler") is not None:
            batches.load_state_dict(state["sampler"][d.rank])
        ckpt.set_rng_state(state["rng"][d.rank])
        start = resumed_from = int(state["step"])
    elif d.is_main and ck_root.exists():
        ckpt.prune(ck_root, keep_last=cfg.keep_last, keep_every=cfg.keep_every)

    # --- compile ---
    base = _unwrap(model)
    lm_head = getattr(base, "lm_head", None)
    fused_ce = (getattr(cfg, "fused_ce", False) and cfg.z_loss == 0 and not d.enabled
                and cfg.precision != "bf16-autocast" and not hasattr(base, "peft_config")
                and isinstance(lm_head, torch.nn.Linear) and lm_head.bias is None
                and isinstance(getattr(base, "model", None), torch.nn.Module))

    def loss_parts(ids: Any, labels: Any, mask: Any) -> tuple[Any, Any]:
        if fused_ce:  # never materialises the [tokens, vocab] logits; same loss (see kamado.train.fused_ce)
            from kamado.train.fused_ce import linear_cross_entropy

            hs = base.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
            ce = linear_cross_entropy(hs.reshape(-1, hs.size(-1)), lm_head.weight, labels[:, 1:].reshape(-1))
            return ce, torch.zeros((), device=ce.device)
        with prec.autocast():
            logits = model(input_ids=ids, attention_mask=mask).logits
        logits = logits[:, :-1].float()
        tgt = labels[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=-100,
                             reduction="sum")
        if cfg.z_loss > 0:
            lse = torch.logsumexp(logits, dim=-1)
            z = (lse.square() * (tgt != -100)).sum()
        else:
            z = torch.zeros((), device=ce.device)
        return ce, z

    fwd = loss_parts
    if cfg.compile:
        if d.enabled:
            for layer in getattr(getattr(model, "model", None), "layers", []):
                layer.compile()
        else:
            fwd = torch.compile(loss_parts)

    # --- FLOPs, peak ---
    if mcfg is not None and hasattr(mcfg, "num_hidden_layers"):
        mf = model_flops(mcfg, cfg.seq_len)
        fpt = mf.flops_per_token
        if n_trainable < n_params:  # frozen weights: no weight gradients (4N instead of 6N for those)
            fpt -= 2.0 * (mf.non_embedding - min(mf.non_embedding, n_trainable))
    else:
        fpt = 6.0 * n_params
    peak, peak_how = device_peak(cfg.precision, d.device)  # one user-wide cache: the same peak for every run

    sinks = make_sinks(out_dir, resume_step=start if resumed_from is not None else None,
                       tensorboard=getattr(cfg, "tensorboard", False), wandb=getattr(cfg, "wandb", None),
                       config=cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else None,
                       enabled=d.is_main)

    def to_dev(b: dict[str, Any]) -> tuple[Any, Any, Any]:
        ids = b["input_ids"].to(d.device, non_blocking=True)
        labels = b.get("labels")
        labels = ids if labels is None else labels.to(d.device, non_blocking=True)
        mask = b.get("attention_mask")
        return ids, labels, (None if mask is None else mask.to(d.device))

    def evaluate() -> float | None:
        if valid is None:
            return None
        vb = list(valid() if callable(valid) else valid)[: max(0, cfg.eval_batches) or None]
        if not vb:
            return None
        model.eval()
        tot = n = 0.0
        rounds = math.ceil(len(vb) / world)
        with torch.no_grad():
            for r in range(rounds):  # every rank runs the same number of forwards (FSDP collectives)
                i = r * world + d.rank
                ids, labels, mask = to_dev(vb[i if i < len(vb) else 0])
                ce, _ = loss_parts(ids, labels, mask)
                if i < len(vb):
                    tot += float(ce)
                    n += float((labels[:, 1:] != -100).sum())
        model.train()
        tot, n = distributed.all_reduce_sum([tot, n], d)
        return tot / max(n, 1.0)

    def save_ckpt(step: int) -> Path | None:
        msd = prec.model_state()
        osd = prec.optim_state(opt)
        samplers = distributed.gather_objects(batches.state_dict(), d)
        rngs = distributed.gather_objects(ckpt.rng_state(), d)
        path = None
        if d.is_main:
            path = ckpt.save(ck_root, step, msd, osd,
                             {"world_size": world, "sampler": samplers, "rng": rngs, "seed": seed,
                              "config": cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else {}},
                             keep_last=cfg.keep_last, keep_every=cfg.keep_every)
        if d.enabled:
            import torch.distributed as tdist

            tdist.barrier()
        return path

    tok_s: list[float] = []
    tfl: list[float] = []
    final_loss = None
    val_loss = first_val = None
    tokens_done = start * cfg.batch_size * cfg.seq_len
    last_saved = resumed_from
    micro_b = cfg.batch_size // per_step
    if start == 0 and valid is not None and cfg.eval_every > 0:
        first_val = val_loss = evaluate()
        sinks.log({"step": 0, "val_loss": val_loss, "tokens": 0})
    show = d.is_main and not (ui.quiet() if quiet is None else quiet)
    bar = ui.progress(description, total=cfg.steps) if show else contextlib.nullcontext(lambda n=1, **kw: None)
    with bar as advance:
        if start:
            advance(start)
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            if hasattr(batches, "set_step"):
                batches.set_step(step)
            lr = lr_at(step, lr=cfg.optimizer.lr, min_lr=cfg.optimizer.min_lr, total=cfg.steps,
                       warmup=cfg.warmup_steps, schedule=cfg.schedule, decay_fraction=cfg.decay_fraction)
            for g in opt.param_groups:
                g["lr"] = lr
            micro = [to_dev(batches.next_batch()) for _ in range(cfg.grad_accum)]
            for ids, _, _ in micro:
                if ids.shape[0] != micro_b:
                    raise KamadoError(f"batch source gave {ids.shape[0]} sequences, expected {micro_b} "
                                      f"(batch_size {cfg.batch_size} / ranks {world} / grad_accum {cfg.grad_accum})")
            n_local = sum(float((lab[:, 1:] != -100).sum()) for _, lab, _ in micro)
            n_global = distributed.all_reduce_sum([n_local], d)[0]
            loss_local = 0.0
            for i, (ids, labels, mask) in enumerate(micro):
                if d.enabled:
                    model.set_requires_gradient_sync(i == len(micro) - 1)
                ce, z = fwd(ids, labels, mask)
                scaled = (ce + cfg.z_loss * z) * (world / max(n_global, 1.0))
                scaled.backward()
                prec.after_backward()
                loss_local += float(ce.detach())
            params = prec.grads_params()
            gn = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            if hasattr(gn, "full_tensor"):
                gn = gn.full_tensor()
            opt.step()
            opt.zero_grad(set_to_none=True)
            prec.after_step()
            loss = distributed.all_reduce_sum([loss_local], d)[0] / max(n_global, 1.0)
            if d.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            ntok = micro_b * cfg.grad_accum * world * ids.shape[1]
            tokens_done += ntok
            tps = ntok / dt
            tflops = fpt * tps / world / 1e12
            if step > start:  # the first step after (re)start includes warm-up / compilation
                tok_s.append(tps)
                tfl.append(tflops)
            final_loss = loss
            if not math.isfinite(loss):
                raise KamadoError(f"loss is {loss} at step {step + 1}: lower train.optimizer.lr or use fp32")
            rec: dict[str, Any] = {"step": step + 1, "loss": loss, "lr": lr, "grad_norm": round(float(gn), 6),
                                   "tokens": tokens_done, "tokens_per_s": round(tps, 1), "tflops": round(tflops, 5),
                                   "mfu": round(tflops * 1e12 / peak, 5), "mem_gb": round(_mem_gb(d.device), 3),
                                   "step_s": round(dt, 4)}
            if hasattr(batches, "metrics"):
                rec |= {k: v for k, v in batches.metrics().items() if isinstance(v, int | float | str)}
            if (step + 1) % max(1, cfg.log_every) == 0 or step + 1 == cfg.steps:
                sinks.log(rec)
            s = step + 1
            if valid is not None and cfg.eval_every > 0 and (s % cfg.eval_every == 0 or s == cfg.steps):
                val_loss = evaluate()
                sinks.log({"step": s, "val_loss": val_loss, "tokens": tokens_done})
            if cfg.ckpt_every > 0 and (s % cfg.ckpt_every == 0 or s == cfg.steps):
                save_ckpt(s)
                last_saved = s
            advance(1, loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}")
    if last_saved != cfg.steps and cfg.steps > start:
        save_ckpt(cfg.steps)
    sinks.close()
    hf_dir = None
    if hf_export is not None:
        export_hf(model, Path(hf_export), tokenizer=tokenizer, state=prec.model_state(), is_main=d.is_main)
        hf_dir = str(hf_export)
    latest_ck = ckpt.latest(ck_root)
    med = _median(tok_s)
    medtf = _median(tfl)
    return TrainResult(steps=cfg.steps, tokens=tokens_done, params=n_params, trainable_params=n_trainable,
                       final_loss=final_loss, val_loss=val_loss, first_val_loss=first_val,
                       tokens_per_s=round(med, 1), tflops=round(medtf, 5), mfu=round(medtf * 1e12 / peak, 5),
                       peak_tflops=round(peak / 1e12, 4), wall_s=round(time.perf_counter() - t_start, 2),
                       resumed_from=resumed_from, world_size=world, precision=cfg.precision,
                       checkpoint=str(latest_ck) if latest_ck else None, hf_dir=hf_dir,
                       extra={"peak": peak_how, "flops_per_token": fpt})


def export_hf(model: Any, out: Path, *, tokenizer: Any = None, state: dict[str, Any] | None = None,
              is_main: bool = True, dtype: str = "float32") -> Path:
    """Write a Hugging Face directory: config.json, model.safetensors (fp32 masters), tokenizer files."""
    import shutil

    import torch
    from safetensors.torch import save_file

    m = _unwrap(model)
    if hasattr(m, "peft_config"):
        if is_main:
            m.save_pretrained(str(out))
        return out
    sd = state if state is not None else {n: p.detach() for n, p in m.named_parameters()}
    if not is_main:
        return out
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tdt = getattr(torch, dtype)
    cfg = m.config
    if getattr(cfg, "tie_word_embeddings", False):
        sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
    save_file({k: v.detach().to("cpu", tdt).contiguous() for k, v in sd.items()}, str(tmp / "model.safetensors"),
              metadata={"format": "pt"})
    cfg.architectures = [type(m).__name__]
    cfg.use_cache = True
    with contextlib.suppress(Exception):
        cfg.dtype = tdt
    cfg.save_pretrained(str(tmp))
    gen = getattr(m, "generation_config", None)
    if gen is not None:
        with contextlib.suppress(Exception):
            gen.save_pretrained(str(tmp))
    if tokenizer is not None:
        if isinstance(tokenizer, str | Path):
            for f in Path(tokenizer).iterdir():
                if f.is_file() and f.name not in ("manifest.json", "config.json") and not f.name.startswith("."):
                    shutil.copy2(f, tmp / f.name)
        else:
            tokenizer.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
