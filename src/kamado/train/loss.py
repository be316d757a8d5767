"""The training loss: summed next-token cross-entropy (labels -100 ignored) plus an optional z-loss.

:class:`CausalLMLoss` computes one micro-batch's ``(ce, z)`` sums; the trainer scales them to the mean
over every target token of the optimizer step. Two ways to the same cross-entropy:

* plain: the model's logits (under the precision policy's autocast), upcast to fp32, ``F.cross_entropy``;
  the z-loss term is ``sum(logsumexp(logits)^2)`` over target tokens.
* fused (``TrainConfig.fused_ce``; a plain LLaMA with a bias-free ``lm_head``, no autocast, no PEFT; with or
  without z-loss; one process or FSDP): :func:`linear_cross_entropy` below, which never materialises the logits.
  Under FSDP2 the output layer's weight is sharded outside the root module's forward, so the fused loss runs
  *as* the ``lm_head`` call inside the root forward (see :meth:`CausalLMLoss._fused_in_root`): FSDP gathers the
  weight, and reduce-scatters its gradient, exactly as for the plain output layer.

``linear_cross_entropy(h, w, target)`` equals ``F.cross_entropy((h @ w.T).float(), target,
ignore_index=-100, reduction="sum")`` with the matmuls in ``h``'s dtype (bf16 on AMX) and the log-softmax
in fp32. The gradients are computed chunk by chunk during the forward (the loss is a scalar, so the
backward only scales them), which saves the logits' memory traffic and a second pass over the vocab.
Deterministic: the same inputs give bit-identical results (needed for exact resume).
"""

from __future__ import annotations

from typing import Any

import torch

from kamado.train.config import TrainConfig
from kamado.train.export import is_peft, unwrap
from kamado.train.precision import Precision


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, target: torch.Tensor, chunk: int,
                with_z: bool) -> tuple[torch.Tensor, torch.Tensor]:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        ztot = torch.zeros((), dtype=torch.float32, device=h.device)
        gh = torch.empty_like(h) if need_h else None
        gw = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w else None
        zh = torch.empty_like(h) if need_h and with_z else None  # z-loss gradients, kept apart: the two
        zw = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w and with_z else None  # scale apart
        for s in range(0, h.shape[0], chunk):
            hc, tc = h[s: s + chunk], target[s: s + chunk]
            logits = (hc @ w.t()).float()
            valid = tc != -100
            safe = torch.where(valid, tc, 0)
            picked = logits.gather(1, safe[:, None]).squeeze(1)
            mx = logits.amax(dim=-1, keepdim=True)
            e = logits.sub_(mx).exp_()  # in place: one [chunk, vocab] fp32 buffer for everything below
            se = e.sum(dim=-1)
            lse = mx.squeeze(1) + se.log()
            total += ((lse - picked) * valid).sum()
            if with_z:
                ztot += (lse.square() * valid).sum()
            if need_h or need_w:
                g = e.mul_((valid / se)[:, None])  # softmax, zero on ignored rows
                if with_z:  # d(lse^2)/dlogits = 2 lse softmax
                    gz = (g * (2 * lse)[:, None]).to(h.dtype)
                    if need_h:
                        zh[s: s + chunk] = gz @ w
                    if need_w:
                        zw.add_(gz.t() @ hc)
                g.scatter_add_(1, safe[:, None], -valid[:, None].to(g.dtype))
                g = g.to(h.dtype)
                if need_h:
                    gh[s: s + chunk] = g @ w
                if need_w:
                    gw.add_(g.t() @ hc)
        ctx.w_dtype = w.dtype
        ctx.save_for_backward(gh, gw, zh, zw)
        return total, ztot

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, grad_z: torch.Tensor) -> tuple[Any, ...]:
        gh, gw, zh, zw = ctx.saved_tensors
        gh = None if gh is None else gh * grad.to(gh.dtype)
        gw = None if gw is None else gw * grad
        if zh is not None:
            gh = gh + zh * grad_z.to(zh.dtype)
        if zw is not None:
            gw = gw + zw * grad_z
        gw = None if gw is None else gw.to(ctx.w_dtype)
        return gh, gw, None, None, None


def linear_cross_entropy(h: torch.Tensor, w: torch.Tensor, target: torch.Tensor, chunk_elems: int = 2**22) -> torch.Tensor:
    """Summed cross-entropy of ``h @ w.T`` against ``target`` (-100 ignored); h [N, H], w [V, H], target [N]."""
    return linear_cross_entropy_z(h, w, target, chunk_elems, with_z=False)[0]


def linear_cross_entropy_z(h: torch.Tensor, w: torch.Tensor, target: torch.Tensor, chunk_elems: int = 2**22, *,
                           with_z: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ce, z)``: summed cross-entropy and summed z-loss ``logsumexp(logits)^2`` over the target tokens,
    without materialising the logits (with ``with_z=False`` the z sum is 0 and costs nothing)."""
    chunk = max(1, chunk_elems // w.shape[0])
    return _LinearCE.apply(h, w, target, chunk, with_z)


def fused_ce_applies(model: Any, cfg: TrainConfig) -> bool:
    """Whether the fused output layer + cross-entropy computes this run's loss (see the module docstring)."""
    base = unwrap(model)
    lm_head = getattr(base, "lm_head", None)
    return (cfg.fused_ce and cfg.precision != "bf16-autocast"
            and not is_peft(base) and isinstance(lm_head, torch.nn.Linear) and lm_head.bias is None
            and isinstance(getattr(base, "model", None), torch.nn.Module))


def _is_fsdp(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


class CausalLMLoss:
    """``loss(ids, labels, mask) -> (ce, z)``: summed next-token cross-entropy and z-loss of a micro-batch."""

    def __init__(self, model: Any, precision: Precision, *, z_loss: float = 0.0, fused: bool = False) -> None:
        self.model, self.precision, self.z_loss, self.fused = model, precision, z_loss, fused
        self.base = unwrap(model)
        self.in_root = fused and _is_fsdp(model)  # FSDP: the fused loss runs inside the root forward

    def _fused_in_root(self, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None) -> tuple[Any, Any]:
        """The fused loss computed by the ``lm_head`` call of the root forward (FSDP2: the weight is gathered
        only there). For that one call the head's ``forward`` is the fused loss; it returns ``[ce, z]``."""
        head, tgt, with_z = self.base.lm_head, labels[:, 1:].reshape(-1), self.z_loss > 0

        def fused_head(h: torch.Tensor) -> torch.Tensor:
            h = h[:, :-1]
            return torch.stack(linear_cross_entropy_z(h.reshape(-1, h.size(-1)), head.weight, tgt, with_z=with_z))

        head.forward = fused_head  # an instance attribute: nn.Module.__call__ and FSDP's hooks stay as they are
        try:
            out = self.model(input_ids=ids, attention_mask=mask).logits
        finally:
            del head.forward
        return out[0], out[1]

    def __call__(self, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None) -> tuple[Any, Any]:
        if self.in_root:
            return self._fused_in_root(ids, labels, mask)
        if self.fused:  # never materialises the [tokens, vocab] logits; the same loss
            hs = self.base.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
            return linear_cross_entropy_z(hs.reshape(-1, hs.size(-1)), self.base.lm_head.weight,
                                          labels[:, 1:].reshape(-1), with_z=self.z_loss > 0)
        with self.precision.autocast():
            logits = self.model(input_ids=ids, attention_mask=mask).logits
        logits = logits[:, :-1].float()
        tgt = labels[:, 1:]
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1),
                                               ignore_index=-100, reduction="sum")
        if self.z_loss > 0:
            z = (torch.logsumexp(logits, dim=-1).square() * (tgt != -100)).sum()
        else:
            z = torch.zeros((), device=ce.device)
        return ce, z
