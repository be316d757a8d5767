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

    tasks: list[str] = Field(["perplexity", "jcommonsenseqa"], description="Tasks or suites: jcommonsenseqa, jnli, "
                             "jsts, jsquad, aio, mgsm-ja, xwinograd-ja, arc-easy, arc-challenge, hellaswag, "
                             "truthfulqa-mc, dolly-ja-heldout, dolly-ja-select, dolly-ja-report, perplexity; suites "
                             "jglue, ja-leaderboard, en, mc, quick, all.")
    limit: int | None = Field(200, description="Examples per task (1 or more; unset: all).")
    models: list[str] = Field(["pretrain", "tune/full", "tune/lora"], description="The run's models to evaluate "
                              "(pretrain, tune/full, tune/lora; missing ones are skipped) or model folders (PATH or "
                              "LABEL=PATH, relative to the run folder).")
    batch_size: int = Field(16, ge=1, description="Questions per forward pass (1 or more).")
    fewshot: dict[str, Annotated[int, Field(ge=0)]] = Field({}, description="Demonstrations per task, e.g. "
                                                            "jcommonsenseqa: 3 (0: zero-shot; a task not named: "
                                                            "its own).")
    ppl_sources: list[str] = Field(["pack"], description="Perplexity text: pack (the data stage's validation split; "
                                   "without a data stage ja_wiki=jsquad-valid and en_wiki=wikitext2) and/or data-root "
                                   "text sets or files, as NAME or LABEL=NAME.")
    # the default covers all of JSQuAD validation's passages and WikiText-2's articles
    ppl_max_chars: int = Field(500_000, ge=1, description="Perplexity characters per source, whole documents in a "
                               "seeded order, the last one cut: the same text for every model and tokenizer (1 or "
                               "more).")
    ppl_window: int = Field(512, ge=2, description="Tokens per perplexity window (2 or more).")
    instruct_generate: bool = Field(True, description="Held-out instruction tasks also generate greedy answers "
                                    "and score them (chrf, rouge_l); false: the reference answers' loss only.")
    ppl_normal_form: Literal["identity", "nfkc", "nfkc_ja"] = Field(
        "identity", description="Fold the perplexity text into this normal form before it is chosen and scored "
        "(identity: as stored; nfkc_ja: the corpus normalize step's form), so models trained on raw and on "
        "normalised text are scored on the same characters.")
    max_new_tokens: int = Field(32, ge=1, description="Tokens generated per answer in generation tasks (JSQuAD, "
                                "aio; mgsm-ja keeps lm-eval's 256).")
    # bfloat16 where native: about 2x faster here, same accuracy on the tiny recipe
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="auto (bfloat16 on GPUs and on CPUs "
                                                          "with native bf16, AMX/AVX512-BF16; else float32), float32 "
                                                          "or bfloat16.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (1 or more; unset: 1 for models under "
                                "50M parameters, else torch's choice).")
    backend: Literal["native", "lm-eval"] = Field("native", description="native (kamado's scorer) or lm-eval "
                                                  "(lm-evaluation-harness on the same prompts; arc-easy, "
                                                  "arc-challenge, hellaswag, truthfulqa-mc, jcommonsenseqa, mgsm-ja, "
                                                  "xwinograd-ja; with prompts: leaderboard also jnli, jsquad).")
    prompts: Literal["kamado", "leaderboard"] = Field("kamado", description="kamado (kamado's Japanese prompts) or "
                                                      "leaderboard (lm-eval's japanese_leaderboard prompts, 3/3/2 "
                                                      "shots and sampler for jcommonsenseqa, jnli, jsquad; aio in "
                                                      "that style; mgsm-ja, xwinograd-ja and English tasks are "
                                                      "lm-eval's in both).")

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
