"""FP8 training (``train.precision: fp8``, torchao float8) through the real trainer, on the CPU's FP8 matmuls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchao.float8")

from kamado.config import KamadoError  # noqa: E402
from kamado.model.presets import build_model, llama_config  # noqa: E402
from kamado.train.config import TrainConfig  # noqa: E402
from kamado.train.precision import to_float8  # noqa: E402
from kamado.train.sources import TokenWindows, byte_tokens  # noqa: E402
from kamado.train.trainer import train  # noqa: E402

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)


def _model() -> torch.nn.Module:
    return build_model(llama_config("tiny", vocab_size=256, overrides=SMALL), seed=7)


def _run(out: Path, text: Path, precision: str, steps: int = 12) -> list[float]:
    cfg = TrainConfig(steps=steps, batch_size=4, seq_len=64, warmup_steps=2, eval_every=0, ckpt_every=steps,
                      seed=1, precision=precision, optimizer={"lr": 3e-3, "min_lr": 3e-4})
    src = TokenWindows(byte_tokens(text, 200_000), cfg.seq_len, cfg.batch_size, seed=3)
    train(_model(), src, cfg, out, quiet=True, hf_export=out / "hf")
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r["loss"] for r in recs if "loss" in r]


def test_decoder_linears_become_float8_and_keep_their_names() -> None:
    from torchao.float8.float8_linear import Float8Linear

    m = _model()
    names = set(m.state_dict())
    n = to_float8(m)
    fp8 = [k for k, mod in m.named_modules() if isinstance(mod, Float8Linear)]
    assert n == len(fp8) == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
    assert not isinstance(m.lm_head, Float8Linear)  # the output layer stays bf16 for the fused loss
    assert set(m.state_dict()) == names  # checkpoints and the HF export are unchanged


def test_fp8_trains_like_bf16_and_exports_a_plain_llama(tmp_path: Path, data_root: Path) -> None:
    text = data_root / "en_text" / "tinyshakespeare.txt"
    fp8 = _run(tmp_path / "fp8", text, "fp8")
    bf16 = _run(tmp_path / "bf16", text, "bf16")
    assert fp8[-1] < fp8[0] - 0.5  # it learns
    assert fp8 != bf16  # the matmuls really ran in FP8 ...
    assert all(abs(a - b) < 0.05 * b for a, b in zip(fp8, bf16, strict=True))  # ... and track bf16 closely
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(tmp_path / "fp8" / "hf")
    assert type(hf.model.layers[0].mlp.up_proj) is torch.nn.Linear  # a plain Hugging Face model


def test_no_eligible_layer_is_a_clear_error() -> None:
    m = build_model(llama_config("tiny", vocab_size=250, overrides=dict(SMALL, hidden_size=60, intermediate_size=100,
                                                                        num_attention_heads=2)), seed=1)
    with pytest.raises(KamadoError, match="divisible by 16"):
        to_float8(m)
