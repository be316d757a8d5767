"""Presets are real LlamaConfigs; one function gives parameter counts and FLOPs/token for all of them."""

from __future__ import annotations

import pytest

from kamado.config import KamadoError
from kamado.model.flops import GPU_PEAKS, device_peak, model_flops
from kamado.model.presets import PRESETS, build_model, llama_config


@pytest.mark.parametrize("name", list(PRESETS))
def test_counts_match_the_instantiated_model(name: str) -> None:
    import torch
    from transformers import LlamaForCausalLM

    cfg = llama_config(name, vocab_size=8000)
    with torch.device("meta"):
        m = LlamaForCausalLM(cfg)
    f = model_flops(cfg, 256)
    assert f.params == sum(p.numel() for p in m.parameters())
    assert f.embedding == 8000 * cfg.hidden_size
    assert f.non_embedding == f.params - f.embedding  # untied: the lm_head is a matmul, the table is not
    # PaLM: 6N + 12·L·H·Q·T
    assert f.flops_per_token == 6 * f.non_embedding + 12 * cfg.num_hidden_layers * cfg.hidden_size * 256


def test_preset_shapes() -> None:
    seven = llama_config("7b")
    assert (seven.num_hidden_layers, seven.hidden_size, seven.num_attention_heads,
            seven.max_position_embeddings) == (32, 4096, 32, 4096)
    assert 6.5e9 < model_flops(seven, 4096).params < 7.5e9
    assert 1e6 < model_flops(llama_config("tiny", vocab_size=8000), 256).params < 10e6
    assert 20e6 < model_flops(llama_config("small", vocab_size=8000), 256).non_embedding - 8000 * 512 < 30e6
    one = model_flops(llama_config("1b"), 2048)
    assert 0.9e9 < one.non_embedding < 1.3e9


def test_vocab_overrides_and_errors() -> None:
    cfg = llama_config("tiny", vocab_size=1234, overrides={"num_hidden_layers": 2}, eos_token_id=2)
    assert (cfg.vocab_size, cfg.num_hidden_layers, cfg.eos_token_id) == (1234, 2, 2)
    with pytest.raises(KamadoError, match="unknown preset"):
        llama_config("huge")
    with pytest.raises(KamadoError, match="multiple"):
        llama_config("tiny", overrides={"num_attention_heads": 3})


def test_tied_embeddings_count_once() -> None:
    cfg = llama_config("tiny", vocab_size=1000, overrides={"tie_word_embeddings": True})
    m = build_model(cfg, seed=0)
    f = model_flops(cfg, 128)
    assert f.params == sum(p.numel() for p in m.parameters())
    assert f.non_embedding == f.params  # the shared table is the lm_head matmul


def test_device_peaks(tmp_path) -> None:  # noqa: ANN001
    assert GPU_PEAKS["H100"]["bf16"] == 989e12 and GPU_PEAKS["A100"]["bf16"] == 312e12
    peak, how = device_peak("bf16", "cpu", tmp_path)
    assert peak > 1e9 and "probe" in how
    assert (tmp_path / "peak_flops.json").is_file()
    again, _ = device_peak("bf16", "cpu", tmp_path)  # cached: the same number, no new probe
    assert again == peak
