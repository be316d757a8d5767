"""Tokenize documents into memory-mapped token files, one set per source, with a document index.

Layout of a pack folder::

    pack.json                 vocab_size, dtype, eos/bos ids, fingerprint, per-source counts and paths
    <source>/train.bin        flat uint16/uint32 token ids of the training documents (EOS after each)
    <source>/train.idx.npy    int64 start offset of every training document
    <source>/valid.bin        held-out documents (every ``1/valid_fraction``-th document)
    <source>/valid.idx.npy

Documents are tokenized in parallel (:mod:`kamado.executor`: local processes, or Ray tasks for clusters)
in ordered jobs, so the output is the same for any number of workers. A pack whose fingerprint (config,
tokenizer model, input digests) is unchanged is not redone. :func:`check_pack` detects truncated or
changed token files (file size against the token count, and the digests of ``manifest.json``).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kamado.config import KamadoError
from kamado.corpus.docs import InputSpec, iter_docs
from kamado.data.config import PackConfig
from kamado.executor import Executor
from kamado.folders import folder_name, mark, remove

PACK = "pack.json"
FORMAT = 1

# ---------------------------------------------------------------- worker side

_ENC: Any = None


def _init_worker(tok_dir: str, dtype: str) -> None:
    global _ENC
    _ENC = _Encoder(tok_dir, dtype)


class _Encoder:
    """SentencePiece when the folder has ``tokenizer.model`` (fast, same ids as the HF export), else HF."""

    def __init__(self, tok_dir: str, dtype: str) -> None:
        self.dtype = np.dtype(dtype)
        model = Path(tok_dir) / "tokenizer.model"
        if model.is_file():
            import sentencepiece as spm

            self.sp = spm.SentencePieceProcessor(model_file=str(model))
            self.hf = None
        else:
            from kamado.tokenizer import load

            self.sp = None
            self.hf = load(tok_dir)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.sp is not None:
            ids = self.sp.encode(texts, num_threads=1)
        else:
            from kamado.tokenizer.text import encode_text

            ids = encode_text(self.hf, texts)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((t for x in ids for t in x), dtype=self.dtype, count=int(lengths.sum()))
        return lengths, flat


def _encode_job(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _ENC.encode(texts)


def _describe_batch(texts: list[str]) -> str:
    return f"batch of {len(texts)} documents, the first starting {texts[0][:30]!r}" if texts else "empty batch"


# ---------------------------------------------------------------- main side


def tokenizer_info(tok_dir: Path) -> dict[str, Any]:
    """Vocabulary size and special ids of a tokenizer folder (SentencePiece model or HF tokenizer)."""
    tok_dir = Path(tok_dir)
    model = tok_dir / "tokenizer.model"
    if model.is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(model))
        return {"vocab_size": sp.get_piece_size(), "eos_id": sp.eos_id(), "bos_id": sp.bos_id(),
                "pad_id": sp.pad_id(), "model": "tokenizer.model"}
    if not (tok_dir / "tokenizer_config.json").is_file():
        raise KamadoError(f"{tok_dir}: not a tokenizer folder (no tokenizer.model / tokenizer_config.json)")
    from kamado.tokenizer import load

    tok = load(tok_dir)
    return {"vocab_size": len(tok), "eos_id": tok.eos_token_id, "bos_id": tok.bos_token_id,
            "pad_id": tok.pad_token_id, "model": "tokenizer.json"}


def tokenizer_identity(tok_dir: Path, vocab_size: int | None = None) -> dict[str, Any]:
    """What a pack records of its tokenizer: vocabulary size and the SHA-256 of ``tokenizer.model`` and
    ``tokenizer.json`` (those present), so that training can refuse a pack made with another tokenizer."""
    from kamado.data.artifacts import tokenizer_digests

    if vocab_size is None:
        vocab_size = int(tokenizer_info(tok_dir)["vocab_size"])
    return {"vocab_size": int(vocab_size), "digests": tokenizer_digests(tok_dir)}


def dtype_for(vocab_size: int) -> str:
    """``uint16`` when every id fits (vocabulary ≤ 65,535), else ``uint32``."""
    return "uint16" if vocab_size <= 65535 else "uint32"


def fingerprint(specs: list[InputSpec], tok_dir: Path, cfg: PackConfig) -> str:
    """Identity of a pack: the config that shapes tokens, the tokenizer files and the input digests."""
    from kamado.manifest import digest_files, digest_json

    tok_files = [p for p in Path(tok_dir).iterdir() if p.name in ("tokenizer.model", "tokenizer.json")]
    shape = cfg.model_dump(include={"append_eos", "valid_fraction", "prepend_bos"})
    return digest_json({"format": FORMAT, "config": shape, "tokenizer": sorted(digest_files(tok_files).values()),
                        "inputs": [[s.source, s.force_source, s.lang, sorted(digest_files(s.files).values())]
                                   for s in specs]})


class _SourceWriter:
    """Appends documents of one source to its train/valid token files."""

    def __init__(self, root: Path, name: str, lang: str, valid_every: int) -> None:
        self.name, self.lang, self.valid_every = name, lang, valid_every
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fh = {s: open(self.dir / f"{s}.bin.tmp", "wb") for s in ("train", "valid")}
        self.starts: dict[str, list[int]] = {"train": [], "valid": []}
        self.tokens = {"train": 0, "valid": 0}
        self.chars = {"train": 0, "valid": 0}
        self.docs = 0

    def add(self, toks: np.ndarray, chars: int) -> None:
        split = "valid" if self.valid_every and self.docs % self.valid_every == 0 else "train"
        self.docs += 1
        self.starts[split].append(self.tokens[split])
        self.fh[split].write(toks.tobytes())
        self.tokens[split] += len(toks)
        self.chars[split] += chars

    def close(self) -> dict[str, Any]:
        for f in self.fh.values():
            f.close()
        if self.tokens["train"] == 0 and self.tokens["valid"] > 0:  # a one-document source: train on it
            self.starts["train"], self.starts["valid"] = self.starts["valid"], []
            self.tokens["train"], self.tokens["valid"] = self.tokens["valid"], 0
            self.chars["train"], self.chars["valid"] = self.chars["valid"], 0
            os.replace(self.dir / "valid.bin.tmp", self.dir / "train.bin.tmp.x")
            os.replace(self.dir / "train.bin.tmp", self.dir / "valid.bin.tmp")
            os.replace(self.dir / "train.bin.tmp.x", self.dir / "train.bin.tmp")
        info: dict[str, Any] = {"lang": self.lang}
        for s in ("train", "valid"):
            np.save(self.dir / f"{s}.idx.npy", np.asarray(self.starts[s], dtype=np.int64))
            os.replace(self.dir / f"{s}.bin.tmp", self.dir / f"{s}.bin")
            info[f"{s}_tokens"] = self.tokens[s]
            info[f"{s}_docs"] = len(self.starts[s])
            info[f"{s}_chars"] = self.chars[s]
            info[s] = f"{self.name}/{s}.bin"
            info[f"{s}_idx"] = f"{self.name}/{s}.idx.npy"
        info["docs"] = self.docs
        return info


def _jobs(specs: list[InputSpec], batch_chars: int, errors: list[str]) -> Iterator[list[tuple[str, str, str]]]:
    batch: list[tuple[str, str, str]] = []
    size = 0
    for spec in specs:
        for d in iter_docs(spec, errors):
            batch.append((d.text, d.source, d.lang))
            size += len(d.text)
            if size >= batch_chars:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


def _safe_name(name: str) -> str:
    return folder_name(name, "source name")


def pack(specs: list[InputSpec], tok_dir: Path, out: Path, cfg: PackConfig,
         advance: Callable[..., None] | None = None, force: bool = False) -> dict[str, Any]:
    """Tokenize ``specs`` into ``out``; returns manifest counts (skips an up-to-date pack unless ``force``)."""
    out = Path(out)
    tok_dir = Path(tok_dir)
    fp = fingerprint(specs, tok_dir, cfg)
    old = _read_pack(out)
    if old is not None and old.get("fingerprint") == fp and not force:
        try:
            check_pack(out)
            return counts_of(old) | {"skipped": True}
        except KamadoError:
            pass  # damaged: redo
    tinfo = tokenizer_info(tok_dir)
    dtype = dtype_for(tinfo["vocab_size"])
    mark(out, "data pack")  # refuses a user's non-empty folder before anything is changed
    _clear(out, old)
    valid_every = max(2, round(1 / cfg.valid_fraction)) if cfg.valid_fraction > 0 else 0
    eos = np.asarray([tinfo["eos_id"]], dtype=dtype) if cfg.append_eos else np.zeros(0, dtype=dtype)
    bos = np.asarray([tinfo["bos_id"]], dtype=dtype) if cfg.prepend_bos else np.zeros(0, dtype=dtype)
    writers: dict[str, _SourceWriter] = {}
    errors: list[str] = []
    t0 = time.perf_counter()
    ntok = 0
    infos: deque[list[tuple[str, str, int]]] = deque()  # (source, lang, chars) of the batches in flight

    def batches() -> Iterator[list[str]]:
        for b in _jobs(specs, cfg.batch_chars, errors):
            infos.append([(s, lg, len(t)) for t, s, lg in b])
            yield [t for t, _, _ in b]

    with Executor(cfg.executor, cfg.workers, initializer=_init_worker, initargs=(str(tok_dir), dtype)) as ex:
        for lengths, flat in ex.imap(_encode_job, batches(), max_in_flight=2 * max(1, cfg.workers),
                                     describe=_describe_batch, label="tokenizing"):
            info = infos.popleft()
            pos = 0
            for (src, lang, nchar), n in zip(info, lengths.tolist(), strict=True):
                w = writers.get(src)
                if w is None:
                    w = writers[src] = _SourceWriter(out, _safe_name(src), lang, valid_every)
                toks = flat[pos:pos + n]
                pos += n
                if len(bos) or len(eos):
                    toks = np.concatenate([bos, toks, eos])
                w.add(toks, nchar)
                ntok += len(toks)
            if advance:
                advance(1, tok_s=f"{ntok / max(1e-9, time.perf_counter() - t0):,.0f}")
    empty = {s.source: s.lang or "?" for s in specs if s.force_source and s.source and s.source not in writers}
    if not writers:
        raise KamadoError("no documents found in the inputs" + (f": every source is empty ({', '.join(empty)}; the "
                                                                "corpus filters rejected every document)" if empty else ""))
    if empty:
        from kamado.ui import console

        console.print(f"[yellow]warning:[/] data: source(s) without documents are not packed: {', '.join(empty)} "
                      "(a mixture weight on them is refused)", highlight=False, soft_wrap=True)
    sources = {name: w.close() for name, w in sorted(writers.items())}
    wall = time.perf_counter() - t0
    doc = {"format": FORMAT, "fingerprint": fp, "vocab_size": tinfo["vocab_size"], "dtype": dtype,
           "eos_id": tinfo["eos_id"], "bos_id": tinfo["bos_id"], "pad_id": tinfo["pad_id"],
           "append_eos": cfg.append_eos, "prepend_bos": cfg.prepend_bos, "valid_fraction": cfg.valid_fraction,
           "read_errors": len(errors), "seconds": round(wall, 3), "tokens_per_s": round(ntok / max(wall, 1e-9), 1),
           "workers": cfg.workers, "executor": cfg.executor, "sources": sources,
           "tokenizer": tokenizer_identity(tok_dir, tinfo["vocab_size"])}
    if empty:
        doc["empty_sources"] = empty
    from kamado.manifest import write_json_atomic

    write_json_atomic(out / PACK, doc)
    return counts_of(doc) | {"skipped": False}


def _read_pack(out: Path) -> dict[str, Any] | None:
    p = Path(out) / PACK
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _clear(out: Path, old: dict[str, Any] | None) -> None:
    """Remove an earlier pack's files (only those it wrote) before packing anew."""
    if not out.exists():
        return
    remove(out / PACK)
    for name in (old or {}).get("sources", {}):
        remove(out / folder_name(name, f"{out / PACK}: source name"))
    for p in out.glob("*/*.bin.tmp"):
        remove(p)


def counts_of(doc: dict[str, Any]) -> dict[str, Any]:
    """Flat manifest counts of a pack (per-source token counts included)."""
    src = doc["sources"]
    c: dict[str, Any] = {
        "tokens": sum(s["train_tokens"] for s in src.values()),
        "valid_tokens": sum(s["valid_tokens"] for s in src.values()),
        "docs": sum(s["docs"] for s in src.values()),
        "sources": len(src), "vocab_size": doc["vocab_size"], "dtype": doc["dtype"],
        "tokens_per_s": doc.get("tokens_per_s"), "read_errors": doc.get("read_errors", 0),
    }
    for name, s in src.items():
        c[f"train_tokens/{name}"] = s["train_tokens"]
        c[f"valid_tokens/{name}"] = s["valid_tokens"]
        c[f"docs/{name}"] = s["docs"]
        chars = s.get("train_chars", 0) + s.get("valid_chars", 0)
        toks = s["train_tokens"] + s["valid_tokens"]
        if toks:
            c[f"chars_per_token/{name}"] = round(chars / toks, 4)
    c["per_source"] = {name: {k: s[k] for k in ("lang", "train_tokens", "valid_tokens", "docs")}
                       for name, s in src.items()}
    return c


def check_pack(pack_dir: Path, verify_digests: bool = True) -> dict[str, Any]:
    """``pack.json`` after checking every token file: size == tokens × itemsize, and manifest digests.

    Raises KamadoError naming the damaged files and how to rebuild them.
    """
    pack_dir = Path(pack_dir)
    doc = _read_pack(pack_dir)
    if doc is None:
        raise KamadoError(f"{pack_dir}: no readable {PACK} (pack the data first: `kamado data pack ...` "
                          "or the recipe's data stage)")
    item = np.dtype(doc["dtype"]).itemsize
    bad: list[str] = []
    for s in doc["sources"].values():
        for split in ("train", "valid"):
            p = pack_dir / s[split]
            want = s[f"{split}_tokens"] * item
            if not p.is_file():
                bad.append(f"{s[split]} is missing")
            elif p.stat().st_size != want:
                bad.append(f"{s[split]} has {p.stat().st_size:,} bytes, expected {want:,} "
                           f"({s[f'{split}_tokens']:,} tokens × {item}): truncated or overwritten")
            idx = pack_dir / s[f"{split}_idx"]
            if not idx.is_file():
                bad.append(f"{s[f'{split}_idx']} is missing")
    if verify_digests and not bad:
        from kamado.manifest import read_manifest, verify_outputs

        man = read_manifest(pack_dir)
        if man is not None:
            for name in verify_outputs(pack_dir, man):
                bad.append(f"{name} does not match the digest in manifest.json (changed since packing)")
    if bad:
        raise KamadoError(f"{pack_dir}: damaged token files:\n  " + "\n  ".join(bad) +
                          "\nre-pack them (`kamado data pack ...`, or `kamado run RECIPE --force data`)")
    return doc


def open_tokens(pack_dir: Path, doc: dict[str, Any], source: str, split: str = "train") -> np.ndarray:
    """A read-only memory map of one source's token file (empty array for an empty file)."""
    s = doc["sources"][source]
    n = s[f"{split}_tokens"]
    if n == 0:
        return np.zeros(0, dtype=doc["dtype"])
    return np.memmap(Path(pack_dir) / s[split], dtype=doc["dtype"], mode="r", shape=(n,))
