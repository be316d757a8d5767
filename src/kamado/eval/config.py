"""Config of the evaluation stage."""

from __future__ import annotations

from kamado.config import StrictModel


class EvalConfig(StrictModel):
    """Which task suites to run on which models, and how many examples of each."""

    tasks: list[str] = ["perplexity", "jcommonsenseqa"]
    limit: int | None = 200  # examples per task (None: all)
    models: list[str] = ["pretrain", "tune/full", "tune/lora"]
    batch_size: int = 16
