"""Config of the evaluation stage."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from kamado.config import StrictModel


class EvalConfig(StrictModel):
    """Which task suites to run on which models, and how many examples of each.

    ``tasks`` takes task and suite names (``kamado eval --help`` lists them). ``models`` names the run's
    models: ``pretrain``, ``tune/full``, ``tune/lora`` (missing ones are skipped), or model folders
    (``PATH`` or ``LABEL=PATH``, relative to the run folder). ``ppl_sources`` are
    ``pack`` (the data stage's validation split decoded to text; without a data stage: ``ja_wiki=jsquad-valid``
    and ``en_wiki=wikitext2``) and/or data-root text sets or files, as ``NAME`` or ``LABEL=NAME``.
    """

    tasks: list[str] = ["perplexity", "jcommonsenseqa"]
    limit: int | None = 200  # examples per task (None: all)
    models: list[str] = ["pretrain", "tune/full", "tune/lora"]
    batch_size: int = Field(16, ge=1)
    # per-task number of demonstrations (default: the task's own); 0 is zero-shot
    fewshot: dict[str, Annotated[int, Field(ge=0)]] = {}
    ppl_sources: list[str] = ["pack"]
    # characters per source (whole documents in a seeded order, the last one cut): the same text for every
    # model and tokenizer; the default covers all of JSQuAD validation's passages and WikiText-2's articles
    ppl_max_chars: int = Field(500_000, ge=1)
    ppl_window: int = Field(512, ge=2)
    max_new_tokens: int = Field(32, ge=1)  # generation tasks (JSQuAD, aio); mgsm-ja keeps lm-eval's 256
    # auto: bfloat16 on CPUs with native bf16 (AMX/AVX512-BF16; about 2x faster here, same accuracy on the
    # tiny recipe) and on GPUs, else float32
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None: 1 for models under 50M parameters, else torch's)
    # native: kamado's scorer; lm-eval: lm-evaluation-harness on the same prompts (arc-easy, arc-challenge,
    # hellaswag, truthfulqa-mc, jcommonsenseqa, mgsm-ja, xwinograd-ja; leaderboard: also jnli, jsquad)
    backend: Literal["native", "lm-eval"] = "native"
    # kamado: kamado's Japanese prompts; leaderboard: JCommonsenseQA, JNLI, JSQuAD exactly as lm-eval's
    # japanese_leaderboard tasks (Alpaca-style prompt, 3/3/2 shots, its sampler), aio in that style; English
    # tasks, mgsm-ja and xwinograd-ja are lm-eval's in both
    prompts: Literal["kamado", "leaderboard"] = "kamado"

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, v: list[str]) -> list[str]:
        from kamado.config import KamadoError
        from kamado.eval.tasks import expand

        v = [t.strip() for t in v if t.strip()]  # "a,,b" is a, b
        if not v:
            raise ValueError("no task given (e.g. jcommonsenseqa,perplexity; `kamado eval --help` lists them)")
        try:
            expand(v)
        except KamadoError as e:
            raise ValueError(str(e)) from None
        return v

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, v: Any) -> Any:
        if isinstance(v, dict) and "ppl_max_tokens" in v:
            raise ValueError("ppl_max_tokens was replaced by ppl_max_chars (a budget in characters, so that every "
                             "model and tokenizer is scored on the same text; default 500000)")
        return v

    @field_validator("limit")
    @classmethod
    def _positive_limit(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("limit must be at least 1 (or null for all examples)")
        return v
