"""``kamado data pack`` vs a plain ``datasets.map`` with the same tokenizer: tokens per second, side by side.

Both contenders start from the same document files and end with flat token arrays (EOS after every
document) on disk:

- kamado: ``kamado.data.pack.pack`` (ordered multiprocessing jobs, SentencePiece in each worker,
  per-source memmap files + index + validation split);
- datasets: read the same documents, ``Dataset.from_dict`` → ``.map(tokenizer, batched=True,
  num_proc=N)`` with the exported HF tokenizer (``split_special_tokens=True``, so the ids are the same)
  → concatenate and write one ``.bin``.

Runs alternate A B A B … so load from other users of a shared machine hits both alike; the table shows
every run, the medians and the ratio. Token totals are checked to be equal.

    .venv/bin/python benchmarks/pack_throughput.py                       # 3 rounds, 2 workers
    .venv/bin/python benchmarks/pack_throughput.py --rounds 5 --workers 2 --tokenizer runs/tiny/tokenizer
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".cache" / "bench_pack"
INPUTS = ["ja-wikipedia", "aozora", "mc4-ja-labeled", "fineweb2-ja", "wikitext2", "gutenberg-pride",
          "gutenberg-holmes", "alice"]


def ensure_tokenizer(path: Path | None) -> Path:
    if path is not None:
        return path
    tok = SCRATCH / "tok8k"
    if not (tok / "tokenizer.json").is_file():
        from kamado.corpus.docs import resolve_inputs
        from kamado.tokenizer.config import TokenizerConfig
        from kamado.tokenizer.train import train_tokenizer

        cfg = TokenizerConfig(vocab_size=8000, sample_chars=1_500_000, weights={"ja": 0.6, "en": 0.4})
        train_tokenizer(resolve_inputs(INPUTS), cfg, tok)
    return tok


def run_kamado(tok: Path, workers: int, out: Path) -> tuple[int, float]:
    from kamado.corpus.docs import resolve_inputs
    from kamado.data.config import PackConfig
    from kamado.data.pack import pack

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    c = pack(resolve_inputs(INPUTS), tok, out, PackConfig(workers=workers), force=True)
    return c["tokens"] + c["valid_tokens"], time.perf_counter() - t0


def run_datasets(tok: Path, workers: int, out: Path) -> tuple[int, float]:
    import datasets
    import numpy as np

    from kamado.corpus.docs import iter_docs, resolve_inputs
    from kamado.tokenizer import load

    datasets.disable_progress_bars()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    hf = load(tok)
    eos = hf.eos_token_id
    texts = [d.text for spec in resolve_inputs(INPUTS) for d in iter_docs(spec)]
    ds = datasets.Dataset.from_dict({"text": texts})

    def enc(batch: dict) -> dict:
        ids = hf(batch["text"], add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return {"ids": [x + [eos] for x in ids]}

    ds = ds.map(enc, batched=True, batch_size=256, num_proc=workers if workers > 1 else None,
                remove_columns=["text"], load_from_cache_file=False, cache_file_name=str(out / "map.arrow"))
    flat = np.concatenate([np.asarray(x, dtype=np.uint16) for x in ds["ids"]])
    flat.tofile(out / "tokens.bin")
    return len(flat), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tokenizer", type=Path, default=None)
    a = ap.parse_args()
    os.environ.setdefault("HF_HOME", str(ROOT / ".cache" / "hf"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(SCRATCH / "hf_datasets"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("KAMADO_QUIET", "1")
    tok = ensure_tokenizer(a.tokenizer)
    res: dict[str, list[float]] = {"kamado data pack": [], "datasets.map": []}
    totals: dict[str, int] = {}
    rows = []
    for r in range(a.rounds):
        for name, fn in (("kamado data pack", run_kamado), ("datasets.map", run_datasets)):
            n, dt = fn(tok, a.workers, SCRATCH / name.split()[0])
            totals[name] = n
            res[name].append(n / dt)
            rows.append([r + 1, name, n, round(dt, 2), round(n / dt)])
            print(f"round {r + 1}: {name:18s} {n:,} tokens in {dt:.2f}s = {n / dt:,.0f} tokens/s", flush=True)
    same = len(set(totals.values())) == 1
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"\ntokens: {totals} ({'equal' if same else 'DIFFERENT'}); workers={a.workers}, rounds={a.rounds} "
          f"(interleaved), cores={os.cpu_count()}")
    print("\n| contender | median tokens/s | runs (tokens/s) | vs datasets.map |")
    print("|---|---|---|---|")
    for k, v in res.items():
        print(f"| {k} | {med[k]:,.0f} | {', '.join(f'{x:,.0f}' for x in v)} | {med[k] / med['datasets.map']:.2f}× |")


if __name__ == "__main__":
    main()
