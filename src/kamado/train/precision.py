"""The precision policy: which dtype the weights, the optimizer and the matmuls use.

Modes (``TrainConfig.precision``):
  fp32           fp32 weights and math.
  bf16           bf16 weights for compute, fp32 master weights and optimizer state (one process: a
                 bf16 copy of the model plus fp32 masters; FSDP2: ``MixedPrecisionPolicy(bf16)``).
  bf16-autocast  fp32 weights, matmuls under ``torch.autocast(bfloat16)``.
  bf16-pure      bf16 weights and optimizer state, no master copy (fastest, least exact).
  fp8            as bf16, and the decoder's linear layers compute in FP8 (torchao float8 training: tensorwise
                 dynamic scales, e4m3 inputs/weights, e5m2 gradients; :func:`to_float8`). The output layer,
                 embeddings, norms and attention stay bf16. Needs ``torchao`` (extra ``fp8``) and FP8 matmuls:
                 a CUDA GPU of compute capability ≥ 8.9 (H100/H200/L4/RTX 40), or the CPU (slow; for tests).

:class:`Precision` owns the parameters the optimizer steps, moves gradients and weights between the
model and the fp32 masters, and reads/writes the full (unsharded) model and optimizer state.
"""

from __future__ import annotations

import contextlib
from typing import Any

from kamado.config import KamadoError


def to_float8(model: Any) -> int:
    """Swap the decoder's ``nn.Linear`` layers for torchao's ``Float8Linear`` (same parameters and state-dict
    names, so checkpoints and the Hugging Face export are unchanged); returns how many were swapped.

    Kept in bf16: the output layer (its logits feed the fused cross-entropy) and any layer whose dimensions are
    not multiples of 16 (FP8 matmul kernels need them)."""
    import logging

    import torch

    logging.getLogger("torchao").setLevel(logging.ERROR)  # its optional CUDA extensions' load warnings
    try:
        from torchao.float8 import convert_to_float8_training
    except ImportError as e:
        raise KamadoError("train.precision fp8 needs torchao: pip install 'kamado[fp8]' "
                          "(torchao==0.18.0; keep torch pinned)") from e
    dev = next(model.parameters()).device
    if dev.type == "cuda" and torch.cuda.get_device_capability(dev) < (8, 9):
        name = torch.cuda.get_device_name(dev)
        raise KamadoError(f"train.precision fp8: {name} has no FP8 matmuls (compute capability "
                          f"{'.'.join(map(str, torch.cuda.get_device_capability(dev)))} < 8.9); use bf16")

    def keep(mod: torch.nn.Module, fqn: str) -> bool:
        return (isinstance(mod, torch.nn.Linear) and not fqn.endswith("lm_head")
                and mod.in_features % 16 == 0 and mod.out_features % 16 == 0)

    n = sum(1 for fqn, m in model.named_modules() if keep(m, fqn))
    if n == 0:
        raise KamadoError("train.precision fp8: no linear layer with dimensions divisible by 16 to run in FP8")
    convert_to_float8_training(model, module_filter_fn=keep)
    return n


class Precision:
    """Owns the parameters the optimizer steps and moves gradients/weights between model and masters."""

    def __init__(self, model: Any, mode: str, fsdp: bool) -> None:
        import torch

        self.model, self.mode, self.fsdp = model, mode, fsdp
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.master: dict[str, Any] | None = None
        if mode in ("bf16", "fp8") and not fsdp:
            self.master = {n: torch.nn.Parameter(p.detach().float().clone()) for n, p in self.named}
        if mode in ("bf16", "bf16-pure", "fp8") and not fsdp:
            for p in model.parameters():
                p.data = p.data.to(torch.bfloat16)

    def opt_named(self) -> list[tuple[str, Any]]:
        """(name, parameter) pairs the optimizer steps: the fp32 masters, else the trainable weights."""
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
        """Copy the updated masters into the model's compute weights."""
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

    # --- sharded checkpoint state (FSDP): this rank's shards, keyed by parameter name ---
    def sharded_state(self, opt: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model, optimizer) state dicts of DTensor shards, for ``torch.distributed.checkpoint``; FSDP only."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        if not self.fsdp:
            raise KamadoError("a sharded checkpoint needs an FSDP run (torchrun, more than one rank)")
        return get_state_dict(self.model, opt)

    def load_sharded_state(self, opt: Any, msd: dict[str, Any], osd: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        set_state_dict(self.model, opt, model_state_dict=msd, optim_state_dict=osd)
