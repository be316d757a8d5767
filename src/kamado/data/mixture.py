"""The ja/en mixture: per-source token shares, stages by training progress, planned token counts.

Weights are token shares (every sample is one ``seq_len`` window, so a sample share is a token
share). Keys are source names of the pack or languages; a language's weight is split among its
sources by size. With ``stages``, stage *k* covers the optimizer steps from
``round(start_k × total_steps)`` to the next stage's first step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kamado.data.config import MixtureConfig


def resolve_weights(weights: dict[str, float] | None, sizes: dict[str, int], langs: dict[str, str],
                    what: str = "mixture.weights", empty: dict[str, str] | None = None) -> dict[str, float]:
    """Normalised per-source weights from source- or language-keyed weights (None: by size); a weight on a
    source in ``empty`` (no documents: left empty by the corpus filters) is an error naming it."""
    from kamado.tokenizer.train import resolve_weights as _resolve

    return _resolve(weights, sizes, langs, what, empty)


def stage_weights(mix: MixtureConfig, sizes: dict[str, int], langs: dict[str, str],
                  empty: dict[str, str] | None = None) -> list[tuple[float, dict[str, float]]]:
    """``[(start, {source: share})]`` for every stage (one stage when the mixture has none)."""
    if mix.stages:
        return [(st.start, resolve_weights(st.weights, sizes, langs, f"mixture.stages[{i}].weights", empty))
                for i, st in enumerate(mix.stages)]
    return [(0.0, resolve_weights(mix.weights, sizes, langs, empty=empty))]


def stage_starts(mix: MixtureConfig, total_steps: int) -> list[int]:
    """First optimizer step of each stage."""
    starts = [st.start for st in mix.stages] if mix.stages else [0.0]
    return [int(round(s * total_steps)) for s in starts]


def stage_at(starts: list[int], step: int) -> int:
    """Index of the stage that optimizer step ``step`` (0-based) belongs to."""
    k = 0
    for i, s in enumerate(starts):
        if step >= s:
            k = i
    return k


@dataclass
class PlanRow:
    stage: int
    first_step: int
    last_step: int  # exclusive
    source: str
    lang: str
    share: float
    tokens: int
    epochs_cum: float  # epochs of the source consumed by the end of this stage


def plan(sources: dict[str, dict[str, Any]], mix: MixtureConfig, total_steps: int, seqs_per_step: int,
         seq_len: int) -> tuple[list[PlanRow], list[str]]:
    """Planned tokens per stage and source, and warnings for sources repeated beyond ``max_epochs``.

    ``sources`` maps a source name to ``{"lang", "train_tokens"}`` (as in ``pack.json``).
    """
    sizes = {s: int(v.get("train_tokens", 0)) for s, v in sources.items()}
    langs = {s: str(v.get("lang")) for s, v in sources.items()}
    weights = stage_weights(mix, sizes, langs)
    starts = stage_starts(mix, total_steps) + [total_steps]
    rows: list[PlanRow] = []
    used = dict.fromkeys(sources, 0)
    warnings: list[str] = []
    for k, (_, w) in enumerate(weights):
        a, b = starts[k], max(starts[k], starts[k + 1])
        nseq = (b - a) * seqs_per_step
        for s in sources:
            n = int(round(w.get(s, 0.0) * nseq))
            used[s] += n * seq_len
            ep = used[s] / sizes[s] if sizes[s] else (math.inf if n else 0.0)
            rows.append(PlanRow(k, a, b, s, langs[s], w.get(s, 0.0), n * seq_len, ep))
    for s in sources:
        ep = used[s] / sizes[s] if sizes[s] else (math.inf if used[s] else 0.0)
        if ep > mix.max_epochs:
            warnings.append(f"source {s!r} would be repeated {ep:.1f} times (cap max_epochs={mix.max_epochs:g}): "
                            f"the sampler stops drawing it at the cap and gives its share to the other sources")
    return rows, warnings


def realized(records: list[dict[str, Any]]) -> dict[int, dict[str, int]]:
    """Tokens drawn per stage and source, from ``metrics.jsonl`` records with ``mix_stage_tokens/...`` keys."""
    last: dict[int, dict[str, Any]] = {}
    for r in records:
        if "mix_stage" in r and isinstance(r.get("step"), int | float):
            k = int(r["mix_stage"])
            if k not in last or r["step"] >= last[k]["step"]:
                last[k] = r
    out: dict[int, dict[str, int]] = {}
    for k, r in sorted(last.items()):
        out[k] = {key.split("/", 1)[1]: int(v) for key, v in r.items() if key.startswith("mix_stage_tokens/")}
    return out
