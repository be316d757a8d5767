"""Corpus jobs as a user runs them: whole processes (start-up, read, process, compress, write), one worker.

Each contender is a command line; they run interleaved A B C … A B C … and the table shows the median CPU
seconds of the whole process (user + system of the child, from ``wait4``: what ``/usr/bin/time`` reports,
robust to other load on a shared machine, unlike wall time), MB/s of input per CPU second, the output's
shard sizes, and the agreement of the result with the first contender of its group (same kept ids; the
removed count beside the bare rensa script's for dedup).

Groups:
- ``dedup``: ``kamado corpus dedup IN --out D --workers 1`` per output format (jsonl.gz is the default),
  ``--rejected ids``, the bare rensa MinHash LSH script (``../shared/checks/rensa_dedup.py``: 128 perms,
  threshold 0.8, character 5-grams; computes only) and, with ``--base SRC``, an older kamado source tree.
- ``clean``: ``kamado corpus clean IN --out D --workers 1 --recipe R`` per output format, and ``--base``.

The input is a JSONL file, e.g. the ~93 MB one that ``../shared/checks/corpus-compat`` builds.

    .venv/bin/python benchmarks/corpus_jobs.py IN.jsonl --rounds 3
    .venv/bin/python benchmarks/corpus_jobs.py IN.jsonl --only clean --clean-docs 2500 --base /work/base/src
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import print_table  # noqa: E402  (benchmarks/common.py)

PY = sys.executable
RENSA = ROOT.parent / "shared" / "checks" / "rensa_dedup.py"


def cpu_of(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    """Run ``cmd``; its CPU seconds (user + system, whole process tree that it waited for) and stderr."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = p.stderr.read().decode("utf-8", "replace") if p.stderr else ""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err[-2000:]}")
    return ru.ru_utime + ru.ru_stime, err


def kept_ids(out: Path) -> list[str]:
    from kamado.corpus.io.readers import read_documents, shard_files

    return [r["id"] for r in read_documents(shard_files(out / "kept"))]


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) / 1e6 if folder.is_dir() else 0.0


def contenders(args: argparse.Namespace, inp: Path, clean_in: Path, tmp: Path) -> list[tuple[str, str, list, dict]]:
    k = [PY, "-m", "kamado.cli"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out: list[tuple[str, str, list, dict]] = []
    if "dedup" in args.only:
        for fmt in args.formats:
            out.append(("dedup", f"kamado dedup {fmt}", k + ["corpus", "dedup", str(inp), "--out", "{out}", "--workers",
                                                           "1", "--format", fmt], env))
        out.append(("dedup", "kamado dedup jsonl.gz --rejected ids",
                    k + ["corpus", "dedup", str(inp), "--out", "{out}", "--workers", "1", "--rejected", "ids"], env))
        if args.base:
            out.append(("dedup", "kamado dedup (base)", k + ["corpus", "dedup", str(inp), "--out", "{out}",
                                                            "--workers", "1"], dict(os.environ, PYTHONPATH=args.base)))
        if RENSA.is_file():
            out.append(("dedup", "rensa script (computes only)", [PY, str(RENSA), str(inp)], env))
    if "clean" in args.only:
        for fmt in args.formats:
            out.append(("clean", f"kamado clean {fmt}", k + ["corpus", "clean", str(clean_in), "--out", "{out}",
                                                           "--workers", "1", "--recipe", args.recipe, "--format", fmt],
                        env))
        if args.base:
            out.append(("clean", "kamado clean (base)", k + ["corpus", "clean", str(clean_in), "--out", "{out}",
                                                            "--workers", "1", "--recipe", args.base_recipe],
                        dict(os.environ, PYTHONPATH=args.base)))
    return out


def whole_jobs(inp: Path, groups: list[str], rounds: int = 3, formats: list[str] | None = None,
               recipe: str = "hojichar-compat", base: str | None = None, base_recipe: str | None = None,
               clean_docs: int = 0) -> list[list]:
    """Run the whole-job contenders of ``groups`` (dedup, clean) on ``inp``; print and return the table rows."""
    args = argparse.Namespace(only=groups, formats=formats or ["jsonl.gz", "jsonl.zst", "parquet"], recipe=recipe,
                              base=base, base_recipe=base_recipe or recipe)
    tmp = Path(tempfile.mkdtemp(prefix="corpus-jobs-"))
    clean_in = Path(inp)
    if clean_docs:
        clean_in = tmp / "clean-in.jsonl"
        with open(inp, encoding="utf-8") as f, open(clean_in, "w", encoding="utf-8") as g:
            for _, line in zip(range(clean_docs), f, strict=False):
                g.write(line)
    cons = contenders(args, Path(inp), clean_in, tmp)
    cpu: dict[str, list[float]] = {name: [] for _, name, _, _ in cons}
    result: dict[str, dict] = {}
    try:
        for r in range(rounds):
            for _group, name, cmd, env in cons:
                out = tmp / f"o{abs(hash(name))}"
                shutil.rmtree(out, ignore_errors=True)
                secs, err = cpu_of([c.replace("{out}", str(out)) for c in cmd], env)
                cpu[name].append(secs)
                print(f"round {r + 1}: {name}: {secs:.2f} CPU-s", file=sys.stderr)
                if r == 0:
                    if name.startswith("rensa"):
                        removed = int(err.split("removed")[-1].split()[0])
                        result[name] = {"removed": removed, "kept": None}
                    else:
                        st = json.loads((out / "stats.json").read_text(encoding="utf-8"))
                        result[name] = {"removed": st["rejected"], "kept": kept_ids(out),
                                        "kept_mb": size_mb(out / "kept"), "rejected_mb": size_mb(out / "rejected")}
                shutil.rmtree(out, ignore_errors=True)
        mb_in = {"dedup": Path(inp).stat().st_size / 1e6, "clean": clean_in.stat().st_size / 1e6}
        first: dict[str, str] = {}
        rows = []
        for group, name, _, _ in cons:
            first.setdefault(group, name)
            res, ref = result[name], result[first[group]]
            med = statistics.median(cpu[name])
            agree = "—" if res["kept"] is None else ("same kept ids" if res["kept"] == ref["kept"] else
                                                       f"{len(set(res['kept']) ^ set(ref['kept']))} ids differ")
            rows.append([group, name, f"{med:.2f}", f"{mb_in[group] / med:.1f}", res["removed"],
                         f"{res.get('kept_mb', 0):.1f}" if res["kept"] is not None else "—",
                         f"{res.get('rejected_mb', 0):.1f}" if res["kept"] is not None else "—", agree])
        print(f"\nwhole jobs, one worker: {', '.join(f'{g} input {mb_in[g]:.1f} MB' for g in groups)}; "
              f"median CPU seconds of {rounds} interleaved rounds")
        print_table(["job", "contender", "CPU-s", "MB/s per CPU-s", "removed", "kept MB", "rejected MB",
                     "agreement"], rows)
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input", type=Path, help="JSONL input (id, text)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=["dedup", "clean"])
    ap.add_argument("--formats", nargs="*", default=["jsonl.gz", "jsonl.zst", "parquet"])
    ap.add_argument("--recipe", default="hojichar-compat", help="chain of the clean jobs")
    ap.add_argument("--base", default=None, help="src folder of an older kamado to compare (PYTHONPATH)")
    ap.add_argument("--base-recipe", default=None, help="chain for the --base clean job (default: --recipe)")
    ap.add_argument("--clean-docs", type=int, default=0, help="clean only the first N documents (0: all)")
    a = ap.parse_args()
    whole_jobs(a.input, a.only, a.rounds, a.formats, a.recipe, a.base, a.base_recipe, a.clean_docs)


if __name__ == "__main__":
    main()
