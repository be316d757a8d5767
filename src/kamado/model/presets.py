"""LLaMA model presets, from a CPU-sized ``tiny`` to the CALM2-7B shape, as ``transformers`` LlamaConfigs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kamado.config import KamadoError

if TYPE_CHECKING:
    from transformers import LlamaConfig, PreTrainedModel

# Shapes keep matmul dimensions multiples of 64 (AMX tiles on CPU, tensor cores on GPU).
PRESETS: dict[str, dict[str, Any]] = {
    # ~0.1M params in the blocks (+0.26M output layer at 4k vocabulary): smallest rung of recipes/experiments/
    "micro": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, max_position_embeddings=512, vocab_size=4000),
    # ~0.85M params in the blocks: a whole experiment (variants x seeds) on a busy 2-core CPU in minutes
    "nano": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=512, vocab_size=4000),
    # ~2.4M non-embedding params: trains on a 2-core CPU in minutes (8k vocabulary: +4M embedding params)
    "tiny": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=1024, vocab_size=8000),
    # ~25M non-embedding params
    "small": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=8, max_position_embeddings=2048, vocab_size=8000),
    # GPT-3 "small"-sized (~85M non-embedding + embeddings ≈ 125M at a 32k vocabulary)
    "125m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                 num_key_value_heads=12, max_position_embeddings=2048, vocab_size=32000),
    # ~1.0B non-embedding params, head dim 128
    "1b": dict(hidden_size=2048, intermediate_size=5504, num_hidden_layers=20, num_attention_heads=16,
               num_key_value_heads=16, max_position_embeddings=4096, vocab_size=32000),
    # the CALM2-7B shape (cyberagent/calm2-7b): 32 layers, hidden 4096, 32 heads, context 4096
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, max_position_embeddings=4096, vocab_size=65024, rope_theta=500000.0,
               rms_norm_eps=1e-6),
}
COMMON: dict[str, Any] = dict(hidden_act="silu", rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                              attention_bias=False, mlp_bias=False, initializer_range=0.02, use_cache=True)


def llama_config(preset: str, *, vocab_size: int | None = None, overrides: dict[str, Any] | None = None,
                 bos_token_id: int | None = None, eos_token_id: int | None = None,
                 pad_token_id: int | None = None) -> LlamaConfig:
    """The LlamaConfig of ``preset`` with the tokenizer's vocabulary size and ``overrides`` applied."""
    from transformers import LlamaConfig

    if preset not in PRESETS:
        raise KamadoError(f"model.preset {preset!r}: unknown preset (choose from {', '.join(PRESETS)})")
    kw = COMMON | PRESETS[preset]
    if vocab_size is not None:
        kw["vocab_size"] = int(vocab_size)
    for k, v in (("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
        if v is not None:
            kw[k] = int(v)
    kw |= dict(overrides or {})
    if kw["hidden_size"] % kw["num_attention_heads"]:
        raise KamadoError(f"model.overrides: hidden_size {kw['hidden_size']} is not a multiple of "
                          f"num_attention_heads {kw['num_attention_heads']}")
    try:
        return LlamaConfig(**kw)
    except (TypeError, ValueError) as e:
        raise KamadoError(f"model preset {preset!r} with overrides {overrides or {}}: {e}") from None


def build_model(config: LlamaConfig, *, seed: int | None = None, attn: str = "sdpa") -> PreTrainedModel:
    """A freshly initialised LlamaForCausalLM (fp32 parameters), deterministic given ``seed``."""
    import torch
    from transformers import LlamaForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    config._attn_implementation = attn
    return LlamaForCausalLM(config)


def tokenizer_ids(tokenizer_dir: Any) -> dict[str, int | None]:
    """``vocab_size`` and special-token ids of a Hugging Face tokenizer dir (offline)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id}
