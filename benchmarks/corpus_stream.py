"""Streaming at scale: ``kamado corpus clean`` / ``dedup`` on 100 MB and 1 GB inputs as whole processes.

The input is the data root's Japanese text (Aozora, Wikipedia paragraphs, labelled mC4, FineWeb-2) repeated
with a perturbation per copy (one character doubled per line, as in ``../shared/checks/corpus-compat``) until it
reaches the size; one JSONL file. Each job runs as a user runs it (one worker by default); the table gives MB
of input per CPU second of the whole process (workers included) and the largest peak RSS of the process and
of any one worker (``/usr/bin/time``), so flat memory shows as the same peak at 100 MB and at 1 GB. A clean of
an input above ``--split-mb`` (the default of ``kamado corpus clean``, 128) runs as byte ranges, one task each.

    .venv/bin/python benchmarks/corpus_stream.py --sizes 100,1000 --work /tmp/stream
    .venv/bin/python benchmarks/corpus_stream.py --sizes 1000 --workers 2 --split-mb 128   # two workers, one file
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import print_table  # noqa: E402  (benchmarks/common.py)

SOURCES = ["ja_text/aozora_pd_works_clean.jsonl.gz", "ja_text/jaquad_train_wikipedia_paragraphs.jsonl.gz",
           "ja_web_noisy/mc4ja_paragraphs_labeled.jsonl", "ja_web_noisy/fineweb2_edu_ja_docs.jsonl"]


def build(root: Path, out: Path, mb: float, seed: int = 5) -> int:
    rng = random.Random(seed)
    base = []
    for p in SOURCES:
        op = gzip.open if p.endswith(".gz") else open
        base += [json.loads(x)["text"] for x in op(root / p, "rt", encoding="utf-8") if x.strip()]
    n, size, copy = 0, 0, 0
    with open(out, "w", encoding="utf-8") as f:
        while size < mb * 1e6:
            for t in base:
                if copy:
                    t = "\n".join(x[:j] + x[j] * 2 + x[j + 1:] if len(x) > 4 else x
                                  for x in t.split("\n") for j in [rng.randrange(max(1, len(x)))])
                n += 1
                line = json.dumps({"id": f"d{n}", "text": t, "source": "ja"}, ensure_ascii=False) + "\n"
                f.write(line)
                size += len(line.encode())
                if size >= mb * 1e6:
                    break
            copy += 1
    return n


def timed(cmd: list[str], log: Path) -> tuple[float, float, int]:
    """CPU seconds (user + sys), wall seconds and peak RSS (MB) of a whole process."""
    tf = log.with_suffix(".time")
    with open(log, "w") as lf:
        subprocess.run(["/usr/bin/time", "-f", "%U %S %e %M", "-o", str(tf), *cmd], stdout=lf,
                       stderr=subprocess.STDOUT, check=True)
    u, s, e, m = tf.read_text().split()[-4:]
    return float(u) + float(s), float(e), int(m) // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100,1000", help="input sizes in MB")
    ap.add_argument("--recipes", default="hojichar-compat,default-ja")
    ap.add_argument("--dedup", action="store_true", help="also dedup each input")
    ap.add_argument("--work", type=Path, default=Path("/tmp/kamado-stream"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--split-mb", type=int, default=None, help="clean's --split-mb (default: kamado's)")
    args = ap.parse_args()
    from kamado.catalog import default_data_root

    root = default_data_root()
    kamado = str(Path(sys.executable).parent / "kamado")
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for mb in [float(x) for x in args.sizes.split(",")]:
        inp = args.work / f"in-{mb:g}MB.jsonl"
        if not inp.is_file():
            build(root, inp, mb)
        real = os.path.getsize(inp) / 1e6
        w = ["--workers", str(args.workers)]
        split = [] if args.split_mb is None else ["--split-mb", str(args.split_mb)]
        jobs = [(f"clean {r}", ["corpus", "clean", str(inp), "--recipe", r, *w, *split])
                for r in args.recipes.split(",")]
        if args.dedup:
            jobs.append(("dedup", ["corpus", "dedup", str(inp), *w]))
        for name, cmd in jobs:
            out = args.work / f"out-{mb:g}-{name.replace(' ', '-')}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            cpu, wall, rss = timed([kamado, *cmd, "--out", str(out)], args.work / f"{out.name}.log")
            tasks = len(list((out / ".work").glob("done-*.json"))) if name.startswith("clean") else "-"
            rows.append([f"{real:.0f} MB", name, tasks, f"{cpu:.1f}", f"{real / cpu:.1f}", f"{wall:.1f}", rss])
            print(rows[-1], flush=True)
            subprocess.run(["rm", "-rf", str(out)], check=True)
    print_table(["input", "job", "tasks", "CPU s (whole process)", "MB/s per CPU s", "wall s", "peak RSS MB"], rows)


if __name__ == "__main__":
    main()
