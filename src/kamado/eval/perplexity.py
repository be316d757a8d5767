"""Perplexity and bits per character on a fixed set of characters, with intervals and a unigram floor.

Every model, whatever its tokenizer, is scored on exactly the same characters: each source's documents are
chosen by a seed from the text alone (a shuffled order of whole documents, the last one cut at a character
budget), then encoded with the model's own tokenizer, special-token strings as text
(:func:`kamado.tokenizer.text.encode_text`). Bits per character divide by the characters of that text, so
they compare across tokenizers; token perplexity only compares between models that share a tokenizer.

Every bpc carries a 95% interval from a bootstrap over documents (windows of one document are not
independent). Beside it, when the model folder holds ``kamado_unigram.npy`` (written by the pretrain stage:
token frequencies of its training mixture), ``unigram_bpc`` is what a unigram model fit on that training
text scores on the same tokens: a model above it has learned no more than token frequencies.

Sources (``eval.ppl_sources``): ``LABEL=NAME`` or ``NAME``, where NAME is a data-root text set
(``jsquad-valid``: the Wikipedia passages of JSQuAD validation, held out of ``ja-wikipedia``;
``wikitext2``), a text/JSONL file, or ``pack`` (the validation split of the run's token pack, per source,
decoded to text). Default outside a run: ``ja_wiki=jsquad-valid`` and ``en_wiki=wikitext2``.
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
from kamado.data.unigram import UNIGRAM
from kamado.eval.metrics import bootstrap_ratio, ratio_stderr
from kamado.jsonl import iter_jsonl

DEFAULT_SOURCES = ["ja_wiki=jsquad-valid", "en_wiki=wikitext2"]
LN2 = math.log(2)


@dataclass
class Doc:
    """One held-out document: its source label, language, tokens and character count (and its text)."""

    source: str
    lang: str
    tokens: list[int]
    chars: int
    id: str = ""


def _cut(text: str, bounds: list[int]) -> list[str]:
    """``text`` cut at ``bounds``: the pieces partition it (their characters add up to the text's)."""
    edges = [0, *sorted({b for b in bounds if 0 < b < len(text)}), len(text)]
    return [text[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


def _texts_of(name: str, path: Path) -> list[str]:
    """Documents of a text set: JSQuAD passages, JSONL ``text`` fields, WikiText articles, text paragraphs.

    A plain text file is cut into paragraphs (at blank lines), or into lines when it has no blank line;
    the pieces keep their line breaks, so a whole file is scored on every one of its characters."""
    if path.suffix == ".json" and "jsquad" in (name + path.name):
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        seen: dict[str, None] = {}
        for art in data:
            for para in art["paragraphs"]:
                seen.setdefault(para["context"].split(" [SEP] ", 1)[-1], None)
        return list(seen)
    if path.name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst")):
        return [t for t in (r.get("text", "") for r in iter_jsonl(path) if isinstance(r, dict)) if t.strip()]
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise KamadoError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if "wikitext" in str(path) or re.search(r"^ = [^=].* = $", text, flags=re.M):
        parts = _cut(text, [m.start() + 1 for m in re.finditer(r"\n(?= = [^=].* = \n)", text)])
    else:
        parts = _cut(text, [m.end() for m in re.finditer(r"\n[ \t\u3000]*\n\s*", text)])
        if len(parts) < 2:
            parts = _cut(text, [m.end() for m in re.finditer(r"\n", text)])
    return [p for p in parts if p.strip()]


def parse_source(spec: str) -> tuple[str, str]:
    """``LABEL=NAME`` or ``NAME`` -> (label, name); a file's label is its stem."""
    label, sep, name = spec.partition("=")
    if not sep:
        name = spec
        label = Path(spec).name.split(".")[0] if ("/" in spec or Path(spec).suffix) else spec
    if not label or not name:
        raise KamadoError(f"eval.ppl_sources: {spec!r}: expected NAME or LABEL=NAME")
    return label, name


def select(texts: list[str], budget_chars: int, key: str) -> list[str]:
    """Whole documents in a seeded order (``key``: seed and source name) up to ``budget_chars``; the
    document that crosses the budget is cut there. Depends on the text alone, never on a tokenizer."""
    order = list(range(len(texts)))
    random.Random(key).shuffle(order)
    out: list[str] = []
    used = 0
    for i in order:
        if used >= budget_chars:
            break
        t = texts[i][: budget_chars - used]
        out.append(t)
        used += len(t)
    return out


def pack_texts(pack_dir: Path, tokenizer: Any) -> dict[str, tuple[str, list[str]]]:
    """Per pack source: (language, documents of its validation split decoded to text)."""
    import numpy as np

    meta_path = pack_dir / "pack.json"
    if not meta_path.is_file():
        raise KamadoError(f"{pack_dir}: no pack.json (is this a `kamado data pack` folder?)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    dtype = np.dtype(meta.get("dtype", "uint16"))
    out: dict[str, tuple[str, list[str]]] = {}
    for name, src in meta.get("sources", {}).items():
        rel = src.get("valid")
        if not rel or not (pack_dir / rel).is_file():
            continue
        arr = np.memmap(pack_dir / rel, dtype=dtype, mode="r")
        if len(arr) == 0:
            continue
        idx_rel = src.get("valid_idx") or (rel[: -len(".bin")] + ".idx.npy" if rel.endswith(".bin") else rel + ".idx.npy")
        starts = [int(x) for x in np.load(pack_dir / idx_rel)] if (pack_dir / idx_rel).is_file() else \
            list(range(0, len(arr), 2048))
        texts = [tokenizer.decode([int(x) for x in arr[s:e]], skip_special_tokens=True)
                 for s, e in zip(starts, [*starts[1:], len(arr)], strict=True) if e > s]
        out[name] = (src.get("lang") or "unk", [t for t in texts if t.strip()])
    return out


def build_docs(sources: list[str], tokenizer: Any, root: Path | None, *, max_chars: int, seed: int,
               pack_dir: Path | None = None, normal_form: str = "identity") -> list[Doc]:
    """The scored documents of every source: folded into ``normal_form`` (characters are counted after it),
    chosen from the text (see :func:`select`), then encoded."""
    from kamado.catalog import resolve
    from kamado.tokenizer import normal
    from kamado.tokenizer.text import encode_text

    sets: list[tuple[str, str, str | None, list[str]]] = []  # (label, selection key, language, texts)
    for spec in sources:
        if spec == "pack":
            if pack_dir is None:
                sets += [(lab, name, None, _texts_of(name, resolve(name, root)))
                         for lab, name in map(parse_source, DEFAULT_SOURCES)]
                continue
            sets += [(name, f"pack:{name}", lang, texts) for name, (lang, texts) in pack_texts(pack_dir, tokenizer).items()]
            continue
        label, name = parse_source(spec)
        sets.append((label, name, None, _texts_of(name, resolve(name, root))))
    labels = [s[0] for s in sets]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise KamadoError(f"eval.ppl_sources: label(s) {', '.join(dup)} given twice; name them LABEL=NAME")
    docs: list[Doc] = []
    for label, key, lang, texts in sets:
        if normal_form != "identity":
            texts = [normal.apply(normal_form, t) for t in texts]
        chosen = select(texts, max_chars, f"{seed}:ppl:{key}")
        if not chosen:
            raise KamadoError(f"perplexity source {label!r} ({key}) holds no text")
        for i, (t, ids) in enumerate(zip(chosen, encode_text(tokenizer, chosen), strict=True)):
            docs.append(Doc(label, lang or guess_lang(t), list(ids), len(t), f"{label}:{i}"))
    return docs


def load_unigram(model_dir: Path | None) -> Any:
    """Log-probabilities of the unigram floor saved beside a model (None when there is none)."""
    import numpy as np

    p = Path(model_dir) / UNIGRAM if model_dir else None
    if p is None or not p.is_file():
        return None
    probs = np.load(p)
    return np.log(np.maximum(probs, 1e-300))


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


def _group(rows: list[dict[str, Any]], key: str, sfx: str, seed: int) -> dict[str, Any]:
    """Metrics of one group of documents (all, a language, a source), suffixed with ``sfx``."""
    nll = [r["nll"] for r in rows]
    chars = [r["chars"] for r in rows]
    toks = [r["tokens"] for r in rows]
    m_tok, se_tok = ratio_stderr(nll, toks)
    m_chr, se_chr = ratio_stderr(nll, chars)
    lo, hi, sd = bootstrap_ratio(nll, chars, seed=f"{seed}:{key}")
    ci = [lo / LN2, hi / LN2] if len(rows) > 1 else None  # one document: no interval to give
    out = {f"token_ppl{sfx}": math.exp(m_tok), f"token_ppl{sfx}_stderr": math.exp(m_tok) * se_tok,
           f"char_ppl{sfx}": math.exp(m_chr), f"char_ppl{sfx}_stderr": math.exp(m_chr) * se_chr,
           f"bpc{sfx}": m_chr / LN2, f"bpc{sfx}_stderr": sd / LN2 if ci else float("nan"), f"bpc{sfx}_ci95": ci,
           f"tokens{sfx}": sum(toks), f"chars{sfx}": sum(chars), f"docs{sfx}": len(rows)}
    if all("unigram_nll" in r for r in rows):
        out[f"unigram_bpc{sfx}"] = sum(r["unigram_nll"] for r in rows) / max(1, sum(chars)) / LN2
    return out


def evaluate_perplexity(model: Any, tokenizer: Any, docs: list[Doc], *, window: int = 512, batch_size: int = 8,
                        progress: Callable[[int], None] | None = None, unigram: Any = None,
                        seed: int = 0) -> tuple[dict[str, Any], list[dict]]:
    """Metrics for all documents (``bpc``), per language (``bpc_ja``) and per source (``bpc@ja_wiki``), each
    with a bootstrap interval over documents (``bpc@ja_wiki_ci95``) and, given ``unigram`` log-probabilities,
    the unigram floor (``unigram_bpc@ja_wiki``); plus per-document details (the same ids for every model)."""
    from kamado.eval.scorer import score_token_streams

    bos = tokenizer.bos_token_id
    res = score_token_streams(model, [d.tokens for d in docs], bos=bos, window=window, batch_size=batch_size,
                              progress=_per_doc(progress, model, docs, bos, window))
    details = []
    for d, r in zip(docs, res, strict=True):
        row = {"id": d.id, "source": d.source, "lang": d.lang, "tokens": r.ntokens, "chars": d.chars, "nll": r.nll}
        if unigram is not None:
            ids = [t for t in d.tokens if t != bos] if d.tokens and d.tokens[0] == bos else d.tokens
            row["unigram_nll"] = -float(unigram[ids].sum()) if ids else 0.0
        details.append(row)
    scored = [x for x in details if x["tokens"]]
    metrics: dict[str, Any] = {}
    for lang in sorted({x["lang"] for x in scored}):
        metrics |= _group([x for x in scored if x["lang"] == lang], f"lang:{lang}", f"_{lang}", seed)
    if scored:
        metrics |= _group(scored, "all", "", seed)
    for src in sorted({x["source"] for x in scored}):
        metrics |= _group([x for x in scored if x["source"] == src], f"src:{src}", f"@{src}", seed)
    metrics["n"] = len(scored)
    return metrics, details
