"""Model choice: a named LLaMA preset plus overrides of its LlamaConfig fields."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from kamado.config import StrictModel
from kamado.model.presets import PRESETS

# LlamaConfig's constructor arguments (transformers 4.5x); an override outside this list is checked against
# the installed transformers, so a newer field still works and a typo is an error before any stage starts
LLAMA_FIELDS = frozenset({
    "attention_bias", "attention_dropout", "bos_token_id", "eos_token_id", "head_dim", "hidden_act", "hidden_size",
    "initializer_range", "intermediate_size", "max_position_embeddings", "mlp_bias", "num_attention_heads",
    "num_hidden_layers", "num_key_value_heads", "pad_token_id", "pretraining_tp", "rms_norm_eps", "rope_parameters",
    "rope_scaling", "rope_theta", "tie_word_embeddings", "use_cache", "vocab_size",
})
_POSITIVE = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "max_position_embeddings", "vocab_size", "head_dim")


def _installed_llama_fields() -> set[str]:
    import inspect

    try:
        from transformers import LlamaConfig
    except ImportError:  # pragma: no cover - transformers is a dependency
        return set()
    return set(inspect.signature(LlamaConfig.__init__).parameters) - {"self", "kwargs"}


class ModelConfig(StrictModel):
    """``preset`` names a LlamaConfig shape (tiny, small, 125m, 1b, 7b); ``overrides`` patch it.

    Override keys must be LlamaConfig fields (a misspelt key is an error, like anywhere else in a recipe).
    """

    preset: str = Field("tiny", description=f"Model shape: {', '.join(PRESETS)} (kamado.model.presets).")
    overrides: dict[str, Any] = {}

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r} (choose from {', '.join(PRESETS)})")
        return v

    @field_validator("overrides")
    @classmethod
    def _known_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(k for k in v if k not in LLAMA_FIELDS)
        if unknown:
            unknown = sorted(set(unknown) - _installed_llama_fields())
        if unknown:
            raise ValueError(f"unknown LlamaConfig field(s) {', '.join(map(repr, unknown))} (known: "
                             f"{', '.join(sorted(LLAMA_FIELDS))})")
        for k in _POSITIVE:
            x = v.get(k)
            if x is not None and (not isinstance(x, int) or isinstance(x, bool) or x < 1):
                raise ValueError(f"{k} must be a positive integer (got {x!r})")
        return v
