"""Output projection + cross-entropy in chunks of tokens, never holding the full [tokens, vocab] logits.

``linear_cross_entropy(h, w, target)`` equals ``F.cross_entropy((h @ w.T).float(), target,
ignore_index=-100, reduction="sum")`` with the matmuls in ``h``'s dtype (bf16 on AMX) and the log-softmax
in fp32. The gradients are computed chunk by chunk during the forward (the loss is a scalar, so the
backward only scales them), which saves the logits' memory traffic and a second pass over the vocab.
Deterministic: the same inputs give bit-identical results (needed for exact resume).
"""

from __future__ import annotations

from typing import Any

import torch


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, target: torch.Tensor, chunk: int) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        gh = torch.empty_like(h) if need_h else None
        gw = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w else None
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
            if need_h or need_w:
                g = e.mul_((valid / se)[:, None])  # softmax, zero on ignored rows
                g.scatter_add_(1, safe[:, None], -valid[:, None].to(g.dtype))
                g = g.to(h.dtype)
                if need_h:
                    gh[s: s + chunk] = g @ w
                if need_w:
                    gw.add_(g.t() @ hc)
        ctx.w_dtype = w.dtype
        ctx.save_for_backward(gh, gw)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        gh, gw = ctx.saved_tensors
        gh = None if gh is None else gh * grad.to(gh.dtype)
        gw = None if gw is None else (gw * grad).to(ctx.w_dtype)
        return gh, gw, None, None


def linear_cross_entropy(h: torch.Tensor, w: torch.Tensor, target: torch.Tensor, chunk_elems: int = 2**22) -> torch.Tensor:
    """Summed cross-entropy of ``h @ w.T`` against ``target`` (-100 ignored); h [N, H], w [V, H], target [N]."""
    chunk = max(1, chunk_elems // w.shape[0])
    return _LinearCE.apply(h, w, target, chunk)
