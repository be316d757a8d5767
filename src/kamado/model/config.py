"""Model choice: a named LLaMA preset plus overrides of its LlamaConfig fields."""

from __future__ import annotations

from typing import Any

from kamado.config import StrictModel


class ModelConfig(StrictModel):
    """``preset`` names a LlamaConfig shape (tiny, small, 125m, 1b, 7b); ``overrides`` patch it."""

    preset: str = "tiny"
    overrides: dict[str, Any] = {}
