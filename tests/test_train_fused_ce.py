"""The fused chunked output layer + cross-entropy equals the plain computation, loss and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kamado.train.loss import linear_cross_entropy


def _reference(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((h @ w.t()).float(), t, ignore_index=-100, reduction="sum")


@pytest.mark.parametrize("chunk_elems", [37 * 50, 2**22])  # many uneven chunks, and one chunk
def test_fp32_loss_and_grads_match(chunk_elems: int) -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(97, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g, requires_grad=True)
    t = torch.randint(0, 50, (97,), generator=g)
    t[::7] = -100  # masked positions contribute nothing
    ref = _reference(h, w, t)
    gh_ref, gw_ref = torch.autograd.grad(ref, (h, w))
    got = linear_cross_entropy(h, w, t, chunk_elems=chunk_elems)
    gh, gw = torch.autograd.grad(got * 1.0, (h, w))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gh, gh_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-4, atol=1e-5)


def test_upstream_gradient_scales_and_result_is_deterministic() -> None:
    g = torch.Generator().manual_seed(1)
    h = torch.randn(64, 8, generator=g, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(30, 8, generator=g, dtype=torch.bfloat16, requires_grad=True)
    t = torch.randint(0, 30, (64,), generator=g)
    a = linear_cross_entropy(h, w, t, chunk_elems=300)
    (ga,) = torch.autograd.grad(a * 0.5, (h,))
    b = linear_cross_entropy(h, w, t, chunk_elems=300)
    (gb,) = torch.autograd.grad(b, (h,))
    assert torch.equal(a, b)
    torch.testing.assert_close(ga.float() * 2, gb.float(), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(a, _reference(h, w, t), rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("chunk_elems", [37 * 50, 2**22])
def test_z_loss_and_grads_match(chunk_elems: int) -> None:
    from kamado.train.loss import linear_cross_entropy_z

    g = torch.Generator().manual_seed(2)
    h = torch.randn(97, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g, requires_grad=True)
    t = torch.randint(0, 50, (97,), generator=g)
    t[::5] = -100
    logits = (h @ w.t()).float()
    ref_ce = F.cross_entropy(logits, t, ignore_index=-100, reduction="sum")
    ref_z = (torch.logsumexp(logits, dim=-1).square() * (t != -100)).sum()
    # the two terms scale apart in the backward (the trainer weights z by its coefficient)
    gh_ref, gw_ref = torch.autograd.grad(0.3 * ref_ce + 1e-2 * ref_z, (h, w))
    ce, z = linear_cross_entropy_z(h, w, t, chunk_elems=chunk_elems)
    gh, gw = torch.autograd.grad(0.3 * ce + 1e-2 * z, (h, w))
    torch.testing.assert_close(ce, ref_ce, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(z, ref_z, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(gh, gh_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-4, atol=1e-5)


def test_trainer_loss_with_z_loss_fused_equals_plain() -> None:
    from kamado.model.presets import build_model, llama_config
    from kamado.train.loss import CausalLMLoss
    from kamado.train.precision import Precision

    model = build_model(llama_config("tiny", vocab_size=64, overrides=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)),
        seed=3)
    ids = torch.randint(0, 64, (2, 17), generator=torch.Generator().manual_seed(4))
    labels = ids.clone()
    labels[0, :5] = -100
    prec = Precision(model, "fp32", fsdp=False)
    plain = CausalLMLoss(model, prec, z_loss=1e-3, fused=False)(ids, labels, None)
    fused = CausalLMLoss(model, prec, z_loss=1e-3, fused=True)(ids, labels, None)
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fused[1], plain[1], rtol=1e-5, atol=1e-3)
