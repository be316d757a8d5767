"""Perplexity on held-out text, per token and per character, reported per language.

Sources are the pack's validation split (``pack`` or a pack folder: token arrays plus their document
index, tokens as the run's tokenizer made them) or text sets from the data root. Token perplexity is only
comparable between models that share a tokenizer; character perplexity and bits per character are
comparable across tokenizers.

Default held-out text outside a run: ``wikitext2`` (WikiText-2 validation, English) and ``jsquad-valid``
(the Wikipedia passages of JSQuAD validation, Japanese; their articles were removed from the
``ja-wikipedia`` pretraining text, so they are held out).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.corpus.docs import guess_lang
from kamado.eval.metrics import ratio_stderr
from kamado.jsonl import iter_jsonl


@dataclass
class Doc:
    """One held-out document: its tokens, its character count and language."""

    source: str
    lang: str
    tokens: list[int]
    chars: int


def _texts_of(name: str, path: Path) -> list[str]:
    """Documents of a text set: wikitext articles, JSQuAD passages, JSONL ``text`` fields, text paragraphs."""
    if path.suffix == ".json" and "jsquad" in (name + path.name):
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        seen: dict[str, None] = {}
        for art in data:
            for para in art["paragraphs"]:
                seen.setdefault(para["context"].split(" [SEP] ", 1)[-1], None)
        return list(seen)
    if path.name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst")):
        return [t for t in (r.get("text", "") for r in iter_jsonl(path)) if t.strip()]
    text = path.read_text(encoding="utf-8")
    if "wikitext" in str(path) or re.search(r"^ = [^=].* = $", text, flags=re.M):
        parts = re.split(r"\n(?= = [^=].* = \n)", text)
        return [p.strip("\n") for p in parts if p.strip()]
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def text_docs(names: list[str], tokenizer: Any, root: Path | None, *, max_tokens: int, limit: int | None,
              seed: int) -> list[Doc]:
    """Tokenised documents of registry text sets (or files), sampled by seed up to a token budget each."""
    from kamado.registry import resolve

    out: list[Doc] = []
    for name in names:
        path = resolve(name, root)
        texts = _texts_of(name, path)
        random.Random(f"{seed}:ppl:{name}").shuffle(texts)
        if limit is not None:
            texts = texts[:limit]
        used = 0
        for t in texts:
            if used >= max_tokens:
                break
            ids = tokenizer(t, add_special_tokens=False)["input_ids"]
            if used + len(ids) > max_tokens:  # cut the last document at a token boundary
                ids = ids[: max_tokens - used]
                t = tokenizer.decode(ids, skip_special_tokens=True)
            if not ids:
                continue
            used += len(ids)
            out.append(Doc(name, guess_lang(t), ids, len(t)))
    return out


def pack_docs(pack_dir: Path, tokenizer: Any, *, max_tokens: int, limit: int | None, seed: int) -> list[Doc]:
    """Documents of a pack's validation split (per source, sampled by seed up to a token budget each)."""
    import numpy as np

    meta_path = pack_dir / "pack.json"
    if not meta_path.is_file():
        raise KamadoError(f"{pack_dir}: no pack.json (is this a `kamado data pack` folder?)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    dtype = np.dtype(meta.get("dtype", "uint16"))
    out: list[Doc] = []
    for name, src in meta.get("sources", {}).items():
        rel = src.get("valid")
        if not rel or not (pack_dir / rel).is_file():
            continue
        arr = np.memmap(pack_dir / rel, dtype=dtype, mode="r")
        if len(arr) == 0:
            continue
        idx_rel = src.get("valid_idx") or (rel[: -len(".bin")] + ".idx.npy" if rel.endswith(".bin") else rel + ".idx.npy")
        idx_path = pack_dir / idx_rel
        if idx_path.is_file():
            starts = [int(x) for x in np.load(idx_path)]
        else:
            starts = list(range(0, len(arr), 2048))
        bounds = [(s, e) for s, e in zip(starts, [*starts[1:], len(arr)], strict=True) if e > s]
        random.Random(f"{seed}:ppl:{name}").shuffle(bounds)
        if limit is not None:
            bounds = bounds[:limit]
        used = 0
        lang = src.get("lang") or "unk"
        for s, e in bounds:
            if used >= max_tokens:
                break
            e = min(e, s + max_tokens - used)
            ids = [int(x) for x in arr[s:e]]
            used += len(ids)
            text = tokenizer.decode(ids, skip_special_tokens=True)
            out.append(Doc(name, lang, ids, len(text)))
    return out


def _per_doc(progress: Callable[[int], None] | None, model: Any, docs: list[Doc], bos: int | None,
             window: int) -> Callable[[int], None] | None:
    """The scorer advances in windows; the bar counts documents: convert, ending exactly at ``len(docs)``."""
    if progress is None:
        return None
    from kamado.eval.scorer import model_max_len

    step = max(1, min(window, model_max_len(model)) - 1)
    total = 0
    for d in docs:
        n = len(d.tokens) + (0 if d.tokens and d.tokens[0] == bos and bos is not None else int(bos is not None))
        total += -(-(n - 1) // step) if n >= 2 else 0
    done = shown = 0

    def advance(n_windows: int) -> None:
        nonlocal done, shown
        done += n_windows
        now = len(docs) if done >= total else done * len(docs) // max(1, total)
        if now > shown:
            progress(now - shown)
            shown = now

    return advance


def evaluate_perplexity(model: Any, tokenizer: Any, docs: list[Doc], *, window: int = 512, batch_size: int = 8,
                        progress: Callable[[int], None] | None = None) -> tuple[dict[str, Any], list[dict]]:
    """Metrics per language (``token_ppl_ja``, ``char_ppl_ja``, ``bpc_ja``, ...) and per-document details."""
    from kamado.eval.scorer import score_token_streams

    bos = tokenizer.bos_token_id
    windows: list[tuple[int, float, int]] = []
    res = score_token_streams(model, [d.tokens for d in docs], bos=bos, window=window, batch_size=batch_size,
                              progress=_per_doc(progress, model, docs, bos, window), windows=windows)
    details = [{"source": d.source, "lang": d.lang, "tokens": r.ntokens, "chars": d.chars, "nll": r.nll}
               for d, r in zip(docs, res, strict=True)]
    # standard errors over windows (a document with one window is one unit; a book is many), with the
    # document's characters shared among its windows by token count
    units: dict[str, list[tuple[float, int, float]]] = {}
    for si, nll, n in windows:
        d = docs[si]
        share = d.chars * n / max(1, res[si].ntokens)
        units.setdefault(d.lang, []).append((nll, n, share))
        units.setdefault("all", []).append((nll, n, share))
    metrics: dict[str, Any] = {}
    for key in [*sorted(k for k in units if k != "all"), "all"]:
        rows = units.get(key)
        if not rows:
            continue
        sfx = "" if key == "all" else f"_{key}"
        nll = [u[0] for u in rows]
        m_tok, se_tok = ratio_stderr(nll, [u[1] for u in rows])
        m_chr, se_chr = ratio_stderr(nll, [u[2] for u in rows])
        metrics[f"token_ppl{sfx}"] = math.exp(m_tok)
        metrics[f"token_ppl{sfx}_stderr"] = math.exp(m_tok) * se_tok  # delta method
        metrics[f"char_ppl{sfx}"] = math.exp(m_chr)
        metrics[f"char_ppl{sfx}_stderr"] = math.exp(m_chr) * se_chr
        metrics[f"bpc{sfx}"] = m_chr / math.log(2)
        metrics[f"bpc{sfx}_stderr"] = se_chr / math.log(2)
        metrics[f"tokens{sfx}"] = sum(u[1] for u in rows)
        metrics[f"chars{sfx}"] = sum(x["chars"] for x in details if x["tokens"] and key in ("all", x["lang"]))
        metrics[f"windows{sfx}"] = len(rows)
    # per source as well when there are several (``bpc@jsquad-valid``, ``bpc@aozora``): two Japanese sets of
    # different styles would otherwise be one ``bpc_ja``
    by_src: dict[str, list[tuple[float, float]]] = {}
    for si, nll, n in windows:
        d = docs[si]
        by_src.setdefault(d.source, []).append((nll, d.chars * n / max(1, res[si].ntokens)))
    if len(by_src) > 1:
        for src, rows2 in sorted(by_src.items()):
            m_chr, se_chr = ratio_stderr([u[0] for u in rows2], [u[1] for u in rows2])
            metrics[f"bpc@{src}"] = m_chr / math.log(2)
            metrics[f"bpc@{src}_stderr"] = se_chr / math.log(2)
    metrics["n"] = len([x for x in details if x["tokens"]])
    return metrics, details
