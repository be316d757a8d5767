"""Checks that stay meaningful at real sizes: safetensors files (header + sizes, read in O(header)), streamed
SHA-256 digests, model folders (config + complete weights) and tokenizer/model pairings (vocabulary size
against embedding rows, special-token ids)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from kamado.config import KamadoError

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "adapter_model.safetensors")


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (``None`` when it is): the header must parse and the
    file must be exactly as long as the tensors it lists, each tensor's byte range matching its shape."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name}: truncated ({size} bytes, no header)"
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 << 20):
                return f"{path.name}: truncated or not safetensors (header of {n} bytes in a {size}-byte file)"
            header = json.loads(f.read(n))
    except OSError as e:
        return f"{path.name}: cannot be read ({e.strerror or e})"
    except (ValueError, UnicodeDecodeError):
        return f"{path.name}: damaged header (not JSON)"
    end = 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            lo, hi = (int(x) for x in t["data_offsets"])
            count = 1
            for d in t["shape"]:
                count *= int(d)
            width = _DTYPE_BYTES.get(t["dtype"])
        except (KeyError, TypeError, ValueError):
            return f"{path.name}: damaged header entry {name!r}"
        if width is not None and hi - lo != count * width:
            return f"{path.name}: tensor {name!r} has {hi - lo} bytes for shape {t['shape']}"
        end = max(end, hi)
    if size != 8 + n + end:
        return f"{path.name}: {size} bytes, expected {8 + n + end} (truncated or padded)"
    return None


def check_model_folder(path: Path) -> dict[str, Any]:
    """Refuse a model folder without a readable config.json or without complete weights; returns the config."""
    path = Path(path)
    if not path.is_dir():
        raise KamadoError(f"{path}: no such model folder")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise KamadoError(f"{path}: not a Hugging Face model folder (no config.json)")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise KamadoError(f"{cfg_file}: damaged (not valid JSON: {e})") from None
    if not isinstance(cfg, dict):
        raise KamadoError(f"{cfg_file}: damaged (not a JSON object)")
    found = [w for w in WEIGHT_FILES if (path / w).is_file()]
    if not found:
        raise KamadoError(f"{path}: model folder without weights (no {' or '.join(WEIGHT_FILES[:2])}); "
                          "was the export interrupted?")
    files: list[Path] = []
    if "model.safetensors" in found:
        files = [path / "model.safetensors"]
    elif "model.safetensors.index.json" in found:
        try:
            wm = json.loads((path / "model.safetensors.index.json").read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError):
            raise KamadoError(f"{path / 'model.safetensors.index.json'}: damaged (no weight_map)") from None
        files = [path / f for f in sorted(set(wm.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise KamadoError(f"{path}: weight shards missing: {', '.join(missing[:5])}")
    for f in files:
        why = safetensors_problem(f)
        if why:
            raise KamadoError(f"{path}: damaged weights: {why}")
    return cfg


def _ids(v: Any) -> set[int]:
    if isinstance(v, int):
        return {v}
    if isinstance(v, list):
        return {x for x in v if isinstance(x, int)}
    return set()


def check_tokenizer_fits(cfg: dict[str, Any], tok: Any, model_where: Path | str, tok_where: Path | str) -> None:
    """Refuse a tokenizer whose ids do not fit the model: more tokens than embedding rows, far fewer (a
    tokenizer of another model), or special-token ids that differ from the model's config."""
    rows = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
    if not isinstance(rows, int):
        return
    n = len(tok)
    if n > rows:
        raise KamadoError(f"{tok_where}: the tokenizer has {n:,} tokens but the model {model_where} has {rows:,} "
                          "embedding rows; ids above that would index past the embedding. Use the model's own "
                          "tokenizer")
    if rows - n > max(512, n // 50):
        raise KamadoError(f"{tok_where}: the tokenizer has {n:,} tokens but the model {model_where} was trained with "
                          f"{rows:,}; it is another model's tokenizer (its ids mean other pieces). Use the model's "
                          "own tokenizer")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        theirs = getattr(tok, key, None)
        mine = _ids(cfg.get(key))
        if theirs is None:
            continue
        if theirs >= rows:
            raise KamadoError(f"{tok_where}: {key} {theirs} is outside the model's {rows:,} embedding rows")
        if mine and key != "pad_token_id" and theirs not in mine:
            raise KamadoError(f"{tok_where}: {key} is {theirs} but the model {model_where} uses "
                              f"{sorted(mine)[0] if len(mine) == 1 else sorted(mine)}; the tokenizer does not belong "
                              "to this model")
