"""Model choice: a named LLaMA preset plus overrides of its LlamaConfig fields."""

from __future__ import annotations

from typing import Any

from pydantic import field_validator

from kamado.config import StrictModel


class ModelConfig(StrictModel):
    """``preset`` names a LlamaConfig shape (tiny, small, 125m, 1b, 7b); ``overrides`` patch it."""

    preset: str = "tiny"
    overrides: dict[str, Any] = {}

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        from kamado.model.presets import PRESETS  # light: no torch/transformers import

        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r} (choose from {', '.join(PRESETS)})")
        return v
