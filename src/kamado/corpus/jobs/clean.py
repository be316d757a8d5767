"""The clean job (``kamado corpus clean``, the corpus stage): a filter chain over many shards, on
:mod:`kamado.executor` (local processes or Ray); resumable; identical output.

:func:`run_clean` plans the tasks and runs the passes; :func:`clean_shard` is one task in a worker: it reads its
records and runs each through :meth:`kamado.corpus.steps.chain.Pipeline.process` into its own kept/rejected shards.

Layout of an output folder::

    kept/part-IIIII-JJJJJ.jsonl.gz       documents that passed (one Document per line)
    rejected/part-IIIII-JJJJJ.jsonl.gz   documents that did not, with rejected_by and reason
    errors.jsonl                         unreadable input lines: file, line, error
    stats.json                           totals, per-step and per-file counts
    .work/                               plan, per-shard markers (resume), line-hash tables

Each task (``IIIII``) is one input file, or one byte range of an uncompressed ``.jsonl`` file larger than
``split_bytes`` (:func:`kamado.corpus.io.ranges.byte_ranges`: the lines that start inside the range, with the file's
real line numbers), or a run of row groups of a larger Parquet file (:func:`kamado.corpus.io.ranges.row_group_ranges`,
real row numbers), so several workers share one big file; the ranges of a file are consecutive tasks, and the
kept/rejected shards of the tasks, read in name order, are the same records in the same order as one task over
the whole file would write. Compressed JSONL (gzip, zstd), text and WET files stay one task each.

A job writes ``.work/plan.json`` first; a later call with the same plan resumes (only shards without a
``done`` marker are redone, their partial files removed); a different plan is refused unless
``overwrite`` is set.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kamado.config import KamadoError
from kamado.corpus.config import ChainConfig
from kamado.corpus.io.documents import ReadError, dumps
from kamado.corpus.io.encoding import check_encoding
from kamado.corpus.io.ranges import (
    ByteRange,
    RowGroupRange,
    byte_ranges,
    row_group_bytes,
    row_group_ranges,
    splittable,
)
from kamado.corpus.io.readers import list_inputs, read_shard
from kamado.corpus.io.writers import COMMAND_FORMAT, ShardWriter, shard_format
from kamado.corpus.jobs.line_counts import LineCounter, merge_counts
from kamado.corpus.steps.base import Env
from kamado.corpus.steps.chain import Pipeline, build_steps, repeated_index
from kamado.executor import EXECUTORS, Executor
from kamado.folders import mark, owner, remove
from kamado.manifest import write_json_atomic

PLAN_VERSION = 1
SPLIT_BYTES = 128 << 20  # uncompressed .jsonl inputs larger than this are cut into byte ranges of about this size
MERGE_SLICE = 2 << 20  # line-count tables are merged ~this many hashes (32 MB of keys and counts) at a time


def _run_tasks(ex: Executor, fn: Callable[[dict], dict], tasks: list[dict], label: str, quiet: bool) -> list[dict]:
    """``fn`` over the shard tasks on ``ex``, with a progress display (shards, documents, MB)."""
    from kamado import ui

    if not tasks:
        return []
    with (ui.progress(label, total=len(tasks), unit="shards") if not quiet else _null_progress()) as advance:
        return ex.map(fn, tasks, progress=lambda r: advance(1, **_counts(r)), label=label)


def _counts(r: Any) -> dict[str, int]:
    """Documents and input bytes of a finished shard, summed by the progress display (docs/s, MB/s)."""
    if not isinstance(r, dict):
        return {}
    return {k: int(r[src]) for k, src in (("docs", "input"), ("bytes", "bytes"))
            if isinstance(r.get(src), int | float)}


class _null_progress:
    def __enter__(self) -> Callable[..., None]:
        return lambda n=1, **kw: None

    def __exit__(self, *a: Any) -> None:
        return None


def _limits(paths: list[Path], max_docs: int | None, source: str | None, text_doc_bytes: int,
            encoding: str | None = None) -> list[int | None]:
    """Per-shard record limits so that at most ``max_docs`` input records are read, in shard order."""
    if max_docs is None:
        return [None] * len(paths)
    left = max_docs
    out: list[int | None] = []
    for p in paths:
        if left <= 0:
            out.append(0)
            continue
        n = 0
        for _ in read_shard(p, source, text_doc_bytes=text_doc_bytes, encoding=encoding):
            n += 1
            if n >= left:
                break
        out.append(n if n >= left else None)
        left -= n
    return out


def run_clean(inputs: list[Path], out: Path, chain: ChainConfig, *, executor: str = "local", workers: int = 2,
          ray_address: str | None = None, data_root: Path | None = None, base_dir: Path | None = None,
          source: str | None = None, max_docs: int | None = None, shard_bytes: int = 256 << 20,
          text_doc_bytes: int = 32_000, overwrite: bool = False, quiet: bool = False,
          format: str = COMMAND_FORMAT, level: int | None = None, encoding: str | None = None,
          split_bytes: int = SPLIT_BYTES) -> dict:
    """Clean every shard of ``inputs`` into ``out``; returns the stats written to ``out/stats.json``.

    ``format``/``level``: the kept/rejected shards (:class:`kamado.corpus.io.writers.ShardWriter`; a ``jsonl.gz``
    level defaults to the chain's ``gzip_level``), written and compressed by the workers. ``encoding``: of the
    JSONL/text/WET inputs (default UTF-8; e.g. ``cp932``, ``euc_jp``). ``split_bytes``: uncompressed ``.jsonl``
    inputs larger than this become several tasks, one per byte range, and Parquet inputs one per run of row groups
    (0: one task per file)."""
    if executor not in EXECUTORS:
        raise KamadoError(f"--executor {executor!r}: use local or ray")
    encoding = check_encoding(encoding)
    paths = list_inputs([Path(p) for p in inputs])
    env = Env(data_root, base_dir)
    build_steps(chain, env)  # validate the chain (and its word lists) before any work starts
    out = Path(out)
    work = out / ".work"
    plan = {"version": PLAN_VERSION, "inputs": [str(p.resolve()) for p in paths], "chain": chain.model_dump(mode="json"),
            "source": source, "max_docs": max_docs, "shard_bytes": shard_bytes, "text_doc_bytes": text_doc_bytes,
            "sizes": [p.stat().st_size for p in paths]}
    format = shard_format(format)
    if (format, level) != ("jsonl.gz", None):  # (absent for gzip at its default level: such plans stay as they were)
        plan["output"] = {"format": format, "level": level}
    if encoding is not None:
        plan["encoding"] = encoding
    if split_bytes > 0 and any((splittable(p) or _parquet(p)) and size > split_bytes
                               for p, size in zip(paths, plan["sizes"], strict=True)):
        plan["split_bytes"] = split_bytes  # (absent when no input is split: plans of one task per file stay as they were)
    plan_file = work / "plan.json"
    if plan_file.is_file():
        old = json.loads(plan_file.read_text(encoding="utf-8"))
        if old != plan:
            if not overwrite:
                raise KamadoError(f"{out} holds the output of a different clean job (other inputs or chain); "
                                  "pass --overwrite to replace it, or choose another --out")
            remove(out)
    elif out.exists() and any(out.iterdir()):
        if not overwrite or owner(out) is None:
            raise KamadoError(f"{out} is not empty and is not a kamado corpus folder; nothing was changed. Choose "
                              "another --out (--overwrite replaces only a folder kamado wrote)")
        remove(out)
    mark(out, "corpus clean")
    work.mkdir(parents=True, exist_ok=True)
    (out / "kept").mkdir(exist_ok=True)
    (out / "rejected").mkdir(exist_ok=True)
    write_json_atomic(plan_file, plan)
    t0 = time.perf_counter()
    limits = _limits(paths, max_docs, source, text_doc_bytes, encoding)
    base = {"out": str(out), "chain": chain.model_dump(mode="json"), "data_root": str(data_root) if data_root else None,
            "base_dir": str(base_dir) if base_dir else None, "source": source, "shard_bytes": shard_bytes,
            "text_doc_bytes": text_doc_bytes, "format": format, "level": level, "encoding": encoding}
    tasks: list[dict] = []
    index = 0
    for p, lim in zip(paths, limits, strict=True):
        parts: list[dict] = [{}]
        if lim is None and split_bytes > 0:  # a file read only in part (max_docs) is not split
            if splittable(p):
                found = byte_ranges(p, split_bytes)
                if len(found) > 1:
                    parts = [{"range": r.to_json()} for r in found]
            elif _parquet(p) and p.stat().st_size > split_bytes:
                groups = row_group_ranges(p, split_bytes)
                if len(groups) > 1:
                    parts = [{"row_groups": g.to_json(), "bytes": b}
                             for g, b in zip(groups, row_group_bytes(p, groups), strict=True)]
        for part in parts:
            if lim != 0:
                tasks.append({**base, "index": index, "path": str(p), "limit": lim, **part})
            index += 1

    with Executor(executor, workers, address=ray_address) as ex:
        return _clean_passes(ex, tasks, out, work, chain, base, executor, workers, quiet, t0)


def _parquet(p: Path) -> bool:
    return p.name.lower().endswith(".parquet")


def _clean_passes(ex: Executor, tasks: list[dict], out: Path, work: Path, chain: ChainConfig, base: dict,
                  executor: str, workers: int, quiet: bool, t0: float) -> dict:
    # pass 1: corpus-wide line counts (only when the chain has a repeated_lines step)
    rep_file = None
    if repeated_index(chain) is not None:
        rep_file = work / "repeated.npy"
        if not rep_file.is_file():
            todo = [t for t in tasks if not (work / f"lines-{t['index']:05d}.npy").is_file()]
            _run_tasks(ex, count_lines, todo, "counting lines", quiet)
            _merge_line_counts(work, [t["index"] for t in tasks], chain, rep_file)
        base["repeated"] = str(rep_file)
        for t in tasks:
            t["repeated"] = str(rep_file)

    # pass 2: clean the shards not done yet (partial files of an interrupted attempt are removed first)
    todo = []
    for t in tasks:
        i = t["index"]
        if (work / f"done-{i:05d}.json").is_file():
            continue
        for sub in ("kept", "rejected"):
            for f in (out / sub).glob(f"part-{i:05d}-*"):
                remove(f)
            for f in (out / sub).glob(f".part-{i:05d}-*.tmp"):
                remove(f)
        todo.append(t)
    _run_tasks(ex, clean_shard, todo, "cleaning", quiet)
    stats = _finalize(out, tasks, chain, executor, workers, time.perf_counter() - t0)
    return stats


def _merge_line_counts(work: Path, indices: list[int], chain: ChainConfig, dest: Path) -> None:
    """Sum per-task line-hash counts; keep the hashes seen in more than ``max_docs`` documents.

    The per-task tables (sorted by hash) are memory-mapped and merged one slice of the hash space at a time,
    so the driver holds about ``16 B x distinct lines / slices`` rather than every distinct line of the corpus."""
    k = repeated_index(chain)
    assert k is not None
    max_docs = int(chain.steps[k].get("max_docs", 10))
    parts = []
    for i in indices:
        a = np.load(work / f"lines-{i:05d}.npy", mmap_mode="r")
        if a.shape[1] == 0:
            continue
        keys = a[0].view(np.uint64)
        if keys.size > 1 and not bool(np.all(keys[1:] > keys[:-1])):  # a table written unsorted (older kamado)
            order = np.argsort(keys)
            a = np.stack([a[0][order], a[1][order]])
            keys = a[0].view(np.uint64)
        parts.append((keys, a[1]))
    total = sum(p[0].size for p in parts)
    slices = max(1, -(-total // MERGE_SLICE))
    edges = [j * 2**64 // slices for j in range(slices + 1)]
    frequent = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        K = np.zeros(0, np.uint64)
        C = np.zeros(0, np.int64)
        for keys, vals in parts:
            a = int(np.searchsorted(keys, np.uint64(lo))) if lo else 0
            b = int(np.searchsorted(keys, np.uint64(hi))) if hi < 2**64 else keys.size
            if b > a:
                K, C = merge_counts(K, C, np.asarray(keys[a:b]), np.asarray(vals[a:b], dtype=np.int64))
        frequent.append(K[C > max_docs])
    out = np.concatenate(frequent) if frequent else np.zeros(0, dtype=np.uint64)
    tmp = dest.with_name(".repeated.npy.tmp")
    with open(tmp, "wb") as f:
        np.save(f, out)
    os.replace(tmp, dest)


def _finalize(out: Path, tasks: list[dict], chain: ChainConfig, executor: str, workers: int, wall: float) -> dict:
    """Merge per-shard results into errors.jsonl and stats.json (in shard order: deterministic)."""
    work = out / ".work"
    shards = [json.loads((work / f"done-{t['index']:05d}.json").read_text(encoding="utf-8")) for t in tasks]
    tmp = out / ".errors.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for t in tasks:
            ef = work / f"errors-{t['index']:05d}.jsonl"
            if ef.is_file():
                f.write(ef.read_text(encoding="utf-8"))
    os.replace(tmp, out / "errors.jsonl")
    totals = {k: sum(int(s[k]) for s in shards) for k in ("input", "kept", "rejected", "errors", "chars_in",
                                                           "chars_kept", "bytes", "text_bytes")}
    steps: list[dict] = []
    for s in shards:
        for j, st in enumerate(s["steps"]):
            if j == len(steps):
                steps.append({k: (dict(v) if isinstance(v, dict) else v) for k, v in st.items()})
                continue
            agg = steps[j]
            for k, v in st.items():
                if k in ("name", "type", "kind"):
                    continue
                if isinstance(v, dict):
                    for rk, rv in v.items():
                        agg[k][rk] = agg[k].get(rk, 0) + rv
                else:
                    agg[k] = agg[k] + v
    for st in steps:
        st["seconds"] = round(st["seconds"], 3)
    read_step = {"name": "read", "type": "read", "kind": "reader", "docs_in": totals["input"],
                 "docs_out": totals["input"] - totals["errors"], "rejected": 0, "errors": totals["errors"],
                 "chars_in": totals["chars_in"], "chars_removed": 0,
                 "seconds": round(sum(float(s["read_seconds"]) for s in shards), 3), "reasons": {}}
    cpu = sum(float(s.get("cpu_seconds", s["seconds"])) for s in shards)
    stats = {
        **{k: totals[k] for k in ("input", "kept", "rejected", "errors")},
        "chars_in": totals["chars_in"], "chars_kept": totals["chars_kept"], "bytes_in": totals["bytes"],
        "text_bytes_in": totals["text_bytes"],
        "chain": chain.name, "executor": executor, "workers": workers,
        "wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
        "mb_per_s_per_process": round(totals["text_bytes"] / 1e6 / cpu, 3) if cpu > 0 else None,
        "steps": [read_step] + steps,
        "files": _per_file(shards),
        "kept_files": [f"kept/{n}" for s in shards for n in s["kept_files"]],
        "rejected_files": [f"rejected/{n}" for s in shards for n in s["rejected_files"]],
    }
    if stats["input"] != stats["kept"] + stats["rejected"] + stats["errors"]:  # pragma: no cover - invariant
        raise KamadoError(f"accounting error in {out}: input {stats['input']} != kept+rejected+errors")
    write_json_atomic(out / "stats.json", stats)
    return stats


def _per_file(shards: list[dict]) -> list[dict]:
    """Counts per input file (the byte ranges of a split file summed), in input order."""
    files: dict[str, dict] = {}
    for s in shards:
        f = files.setdefault(s["file"], {"file": s["file"], "input": 0, "kept": 0, "rejected": 0, "errors": 0})
        for k in ("input", "kept", "rejected", "errors"):
            f[k] += int(s[k])
    return list(files.values())


def all_error_files(stats: dict, out: Path) -> list[str]:
    """``"FILE (N lines; line L: ERROR)"`` for every input file of a clean whose every record is an error
    (an empty file is not one): a wrong encoding or a file that is not JSON lines at all."""
    bad = {f["file"]: int(f["input"]) for f in stats.get("files", [])
           if int(f.get("input", 0)) > 0 and int(f.get("errors", 0)) == int(f["input"])}
    if not bad:
        return []
    first: dict[str, str] = {}
    try:
        with open(Path(out) / "errors.jsonl", encoding="utf-8") as fh:
            for line in fh:
                e = json.loads(line)
                f = e.get("file")
                if f in bad and f not in first:
                    first[f] = f"line {e.get('line')}: {e.get('error')}"
                    if len(first) == len(bad):
                        break
    except (OSError, ValueError):
        pass
    return [f"{f} ({n:,} line{'s' if n != 1 else ''}" + (f"; {first[f]}" if f in first else "") + ")"
            for f, n in bad.items()]


def summary_rows(stats: dict) -> list[list[Any]]:
    """One row per step for the end-of-command table."""
    rows = []
    for st in stats["steps"]:
        top = sorted(st.get("reasons", {}).items(), key=lambda kv: -kv[1])[:3]
        rows.append([st["name"], st["docs_in"], st["docs_out"], st["docs_in"] - st["docs_out"],
                     st["chars_removed"], f"{st['seconds']:.2f}", ", ".join(f"{k} {v}" for k, v in top)])
    return rows


def print_summary(stats: dict, out: Path) -> None:
    from kamado.ui import console, table

    console.print(table(f"corpus clean → {out}", ["step", "docs in", "docs out", "removed", "chars removed",
                                                  "seconds", "top reasons"], summary_rows(stats)))
    console.print(f"input {stats['input']:,} = kept {stats['kept']:,} + rejected {stats['rejected']:,} + "
                  f"errors {stats['errors']:,}   ({stats['text_bytes_in'] / 1e6:.1f} MB of text, "
                  f"{stats['wall_seconds']:.1f}s wall, {stats['mb_per_s_per_process'] or 0:.2f} MB/s per CPU second "
                  "of a worker)")


# ------------------------------------------------------------------------------ one task (in a worker)
_CACHE: dict[str, Any] = {}


def _env_for(task: dict) -> Env:
    rep = None
    if task.get("repeated"):
        key = "rep:" + task["repeated"]
        if key not in _CACHE:
            _CACHE.clear()
            _CACHE[key] = np.sort(np.load(task["repeated"]))
        rep = _CACHE[key]
    return Env(task.get("data_root"), task.get("base_dir"), rep)


def _cached(task: dict, cls: type[Pipeline] | type[LineCounter]) -> Any:
    """The task's :class:`Pipeline` or :class:`LineCounter`, built once per worker process."""
    key = cls.__name__ + hashlib.sha1(json.dumps([task["chain"], task.get("data_root"), task.get("base_dir"),
                                                  task.get("repeated")], sort_keys=True).encode()).hexdigest()
    if key not in _CACHE:
        env = _env_for(task)
        _CACHE[key] = cls(ChainConfig.model_validate(task["chain"]), env)
    return _CACHE[key]


def _pipeline_for(task: dict) -> Pipeline:
    """The task's pipeline with fresh statistics (every shard reports its own)."""
    pipe = _cached(task, Pipeline)
    pipe.reset_stats()
    return pipe


def _records(task: dict) -> Any:
    """The task's records (its byte ``range`` of the file, if it has one), honouring ``limit`` (input records,
    errors included)."""
    limit = task.get("limit")
    rng = ByteRange.from_json(task["range"]) if task.get("range") else None
    groups = RowGroupRange.from_json(task["row_groups"]) if task.get("row_groups") else None
    for i, rec in enumerate(read_shard(Path(task["path"]), task.get("source"),
                                       text_doc_bytes=task.get("text_doc_bytes", 32_000),
                                       encoding=task.get("encoding"), byte_range=rng, row_groups=groups)):
        if limit is not None and i >= limit:
            return
        yield rec


def count_lines(task: dict) -> dict:
    """First pass for ``repeated_lines``: per-document line hashes after the steps before it.

    Writes ``.work/lines-IIIII.npy`` (unique hashes and how many documents hold each) and returns
    its path.
    """
    out = Path(task["out"]) / ".work"
    idx = task["index"]
    counter = _cached(task, LineCounter)
    counter.reset()
    try:
        for rec in _records(task):
            if not isinstance(rec, ReadError):
                counter.add(rec)
        counter._fold()
        path = out / f"lines-{idx:05d}.npy"
        tmp = out / f".lines-{idx:05d}.npy.tmp"
        with open(tmp, "wb") as f:  # a (2, N) int64 array (sorted hashes, counts), written row by row, in blocks
            n = counter.keys.size
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int64)),
                                                     "fortran_order": False, "shape": (2, n)})
            for row in (counter.keys.view(np.int64), counter.vals):
                for j in range(0, n, 1 << 20):
                    f.write(row[j:j + (1 << 20)].astype(np.int64).tobytes())
        os.replace(tmp, path)
    finally:
        counter.reset()  # the table is not kept in the worker between tasks
    return {"index": idx, "path": str(path)}


def clean_shard(task: dict) -> dict:
    """Clean one input shard into its own output files; returns (and stores) the shard's counts."""
    out = Path(task["out"])
    idx = task["index"]
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    pipe = _pipeline_for(task)
    prefix = f"part-{idx:05d}"
    fmt, level = task["format"], task.get("level")
    if level is None and fmt == "jsonl.gz":
        level = pipe.chain.gzip_level
    kept = ShardWriter(out / "kept", prefix, task.get("shard_bytes", 256 << 20), compresslevel=level, format=fmt)
    rej = ShardWriter(out / "rejected", prefix, task.get("shard_bytes", 256 << 20), compresslevel=level, format=fmt)
    work = out / ".work"
    err_tmp = work / f".errors-{idx:05d}.jsonl.tmp"
    n_in = n_kept = n_rej = n_err = 0
    chars_in = chars_kept = text_bytes = 0
    t_read = 0.0
    try:
        with open(err_tmp, "w", encoding="utf-8") as errf:
            it = iter(_records(task))
            while True:
                t0 = time.perf_counter()
                rec = next(it, None)
                t_read += time.perf_counter() - t0
                if rec is None:
                    break
                n_in += 1
                if isinstance(rec, ReadError):
                    n_err += 1
                    errf.write(dumps(rec.to_json()) + "\n")
                    continue
                chars_in += len(rec.text)
                text_bytes += len(rec.text.encode("utf-8", "surrogatepass"))
                doc, by, reason = pipe.process(rec)
                if by is None:
                    n_kept += 1
                    chars_kept += len(doc.text)
                    kept.write(doc.to_json())
                else:
                    n_rej += 1
                    rej.write({**doc.to_json(), "rejected_by": by, "reason": reason})
        kept_paths = kept.close()
        rej_paths = rej.close()
    except BaseException:
        kept.abort()
        rej.abort()
        raise
    os.replace(err_tmp, work / f"errors-{idx:05d}.jsonl")
    result = {
        "index": idx, "file": task["path"], "source": task.get("source"), "input": n_in, "kept": n_kept,
        "rejected": n_rej, "errors": n_err, "chars_in": chars_in, "chars_kept": chars_kept, "text_bytes": text_bytes,
        "bytes": (task["range"][1] - task["range"][0]) if task.get("range") else task.get("bytes")
        or os.path.getsize(task["path"]),
        "read_seconds": round(t_read, 4),
        "seconds": round(time.perf_counter() - t_start, 4),
        "cpu_seconds": round(time.process_time() - cpu_start, 4),
        "kept_files": [p.name for p in kept_paths], "rejected_files": [p.name for p in rej_paths],
        "steps": [s.to_json() for s in pipe.stats],
    }
    done = work / f"done-{idx:05d}.json"
    tmp = work / f".done-{idx:05d}.json.tmp"
    tmp.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, done)
    return result
