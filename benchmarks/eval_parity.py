"""kamado's evaluation against lm-eval 0.4.13 on the same tiny model, items, threads and batch size.

For each task: the first N items through both (kamado's scorer, then lm-eval's ``simple_evaluate`` on a local
task YAML that copies lm-eval's own definition, see kamado.eval.lmeval_backend), per item: same context, same
continuations, log-likelihoods within 2e-3 (generation: same greedy text). Wall times include loading the model
and the data in both; lm-eval is imported before timing. Repetitions alternate nothing between the two inside a
task (kamado first); use --reps to take medians on a busy machine.

  .venv/bin/python benchmarks/eval_parity.py --n 100
  .venv/bin/python benchmarks/eval_parity.py --tasks hellaswag:kamado,jnli:leaderboard --n 50 --json out.json
  .venv/bin/python benchmarks/eval_parity.py --tasks mgsm-ja:leaderboard,xwinograd-ja:leaderboard --n 480 \
      --model runs/tiny/pretrain/hf
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
for var, sub in (("HF_HOME", "hf"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
    os.environ.setdefault(var, str(ROOT / ".cache" / sub))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT = ("arc-easy:kamado,arc-challenge:kamado,hellaswag:kamado,truthfulqa-mc:kamado,"
           "jcommonsenseqa:leaderboard,jnli:leaderboard,jsquad:leaderboard,mgsm-ja:leaderboard,xwinograd-ja:leaderboard")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=DEFAULT, help="TASK:PROMPTS, comma-separated")
    ap.add_argument("--n", type=int, default=100, help="items per task (generation tasks: n // 10, at least 4)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--model", type=Path, default=None, help="a Hugging Face model folder (default: the tests' toy)")
    a = ap.parse_args()

    import logging

    import lm_eval  # noqa: F401  (imported before timing)
    import torch
    from _toy import build_toy_model
    from common import print_table

    from kamado.catalog import data_root
    from kamado.eval.lmeval_backend import compare
    from kamado.eval.tasks import get_task

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    torch.set_num_threads(a.threads)
    root = data_root()
    toy = a.model or build_toy_model(ROOT / ".cache" / "toy-eval-v1", root)
    rows, out = [], []
    for spec in a.tasks.split(","):
        task, prompts = spec.split(":")
        n = max(4, a.n // 10) if get_task(task, prompts).kind == "generation" else a.n
        runs = []
        for _ in range(a.reps):
            with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
                runs.append(compare(toy, task, prompts, n, root=root, work_dir=Path(tmp), batch_size=a.batch_size))
        k = statistics.median(r["seconds_kamado"] for r in runs)
        m = statistics.median(r["seconds_lmeval"] for r in runs)
        same = all(r["identical"] for r in runs)
        rows.append([task, prompts, n, "yes" if same else "NO", f"{runs[0]['max_abs_diff']:.1e}", f"{k:.1f}",
                     f"{m:.1f}", f"{m / k:.1f}x"])
        out.append({"task": task, "prompts": prompts, "items": n, "identical": same,
                    "max_abs_diff": runs[0]["max_abs_diff"], "wall_kamado_s": k, "wall_lmeval_s": m,
                    "ratio": m / k})
        print(f"{task}:{prompts} done", file=sys.stderr, flush=True)
    print_table(["task", "prompts", "items", "identical?", "max |dLL|", "wall kamado s", "wall lm-eval s",
                 "lm-eval / kamado"], rows)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
