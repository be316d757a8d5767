"""kamado's training engine vs a plain Hugging Face ``Trainer``: same model, batch and tokens, on this machine.

Each contender runs in its own fresh process (same thread count), contenders interleaved A B C … A B C …;
the table shows the median step throughput over every rep (first steps, which include warm-up and
compilation, excluded), MFU against this device's bf16 matmul peak, and the ratio to the best HF Trainer.

    .venv/bin/python benchmarks/train_throughput.py                  # tiny and small presets
    .venv/bin/python benchmarks/train_throughput.py --presets tiny --reps 3 --steps 12
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".cache" / "bench_train"
CONTENDERS = {
    "hf-trainer fp32": ("hf", {"bf16": False}),
    "hf-trainer bf16": ("hf", {"bf16": True}),
    "kamado bf16-autocast": ("kamado", {"precision": "bf16-autocast"}),
    "kamado bf16": ("kamado", {"precision": "bf16"}),
    "kamado bf16+compile": ("kamado", {"precision": "bf16", "compile": True}),
}
WARMUP = 3


def _data(vocab: int, seq: int, n_seq: int, seed: int = 0):  # noqa: ANN202
    import numpy as np

    return np.random.default_rng(seed).integers(0, vocab, size=(n_seq, seq), dtype=np.int64)


def worker(kind: str, opts: dict, preset: str, seq: int, batch: int, steps: int, out: Path) -> dict:
    import torch

    from kamado.model.presets import build_model, llama_config

    vocab = 8000
    model = build_model(llama_config(preset, vocab_size=vocab), seed=0)
    rows = _data(vocab, seq, batch * steps)
    times: list[float] = []
    if kind == "kamado":
        from kamado.monitor.sinks import read_jsonl
        from kamado.train.config import TrainConfig
        from kamado.train.engine import train

        class Rows:
            def __init__(self) -> None:
                self.i = 0

            def next_batch(self) -> dict:
                ids = torch.from_numpy(rows[self.i: self.i + batch])
                self.i += batch
                return {"input_ids": ids, "labels": ids}

            def state_dict(self) -> dict:
                return {"i": self.i}

            def load_state_dict(self, d: dict) -> None:
                self.i = d["i"]

        cfg = TrainConfig(steps=steps, batch_size=batch, seq_len=seq, warmup_steps=2, eval_every=0, ckpt_every=0,
                          resume=False, seed=0, **opts)
        train(model, Rows(), cfg, out, cache_dir=SCRATCH, quiet=True)
        times = [r["step_s"] for r in read_jsonl(out / "metrics.jsonl") if "step_s" in r]
    else:
        from transformers import Trainer, TrainerCallback, TrainingArguments

        class Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN201
                self.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN201
                times.append(time.perf_counter() - self.t0)

        ds = [{"input_ids": torch.from_numpy(r), "labels": torch.from_numpy(r)} for r in rows]
        args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, max_steps=steps,
                                 learning_rate=3e-3, warmup_steps=2, lr_scheduler_type="cosine", weight_decay=0.1,
                                 max_grad_norm=1.0, use_cpu=True, report_to=[], save_strategy="no",
                                 logging_strategy="no", dataloader_num_workers=0, seed=0, **opts)
        Trainer(model=model, args=args, train_dataset=ds, callbacks=[Timer()]).train()
    return {"step_s": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=0, help="steps per rep (default: 12 tiny, 7 others)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        name, preset, steps, out = a.worker.split("|")
        kind, opts = CONTENDERS[name]
        print("RESULT " + json.dumps(worker(kind, opts, preset, a.seq_len, a.batch, int(steps), Path(out))))
        return

    from kamado.model.flops import device_peak, model_flops
    from kamado.model.presets import llama_config

    env = dict(os.environ, KAMADO_QUIET="1", TORCHINDUCTOR_CACHE_DIR=str(SCRATCH / "inductor"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    names = a.contenders.split(",")
    peak, how = device_peak("bf16", "cpu", SCRATCH)
    rows, results = [], {}
    for preset in a.presets.split(","):
        steps = a.steps or (12 if preset == "tiny" else 7)
        fpt = model_flops(llama_config(preset, vocab_size=8000), a.seq_len).flops_per_token
        per: dict[str, list[float]] = {n: [] for n in names}
        for rep in range(a.reps):
            for name in names if rep % 2 == 0 else names[::-1]:  # A B C, then C B A
                out = SCRATCH / f"{preset}-{name.replace(' ', '_')}-{rep}"
                cmd = [sys.executable, __file__, "--seq-len", str(a.seq_len), "--batch", str(a.batch),
                       "--worker", f"{name}|{preset}|{steps}|{out}"]
                r = subprocess.run(cmd, env=env, capture_output=True, text=True)
                line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
                if r.returncode or not line:
                    print(f"{preset} {name}: failed\n{r.stderr[-2000:]}", file=sys.stderr)
                    continue
                ts = json.loads(line[0][7:])["step_s"][WARMUP:]
                per[name] += [a.batch * a.seq_len / t for t in ts]
                print(f"  {preset:6s} rep {rep} {name:22s} {statistics.median(per[name][-len(ts):]):9,.0f} tok/s",
                      file=sys.stderr, flush=True)
        med = {n: statistics.median(v) for n, v in per.items() if v}
        hf_best = max((v for n, v in med.items() if n.startswith("hf")), default=None)
        for n, v in med.items():
            mfu = fpt * v / peak
            ratio = v / hf_best if hf_best else float("nan")
            rows.append([preset, n, f"{v:,.0f}", f"{fpt * v / 1e12:.3f}", f"{100 * mfu:.1f}%", f"{ratio:.2f}×"])
            results[f"{preset}/{n}"] = {"tokens_per_s": v, "tflops": fpt * v / 1e12, "mfu": mfu, "vs_hf_best": ratio,
                                        "samples": len(per[n])}
    import torch

    hdr = ["preset", "contender", "tok/s (median)", "TFLOP/s", "MFU", "vs best HF"]
    w = [max(len(str(r[i])) for r in [hdr, *rows]) for i in range(len(hdr))]
    print(f"train throughput, batch {a.batch} × seq {a.seq_len}, vocab 8000, {torch.get_num_threads()} threads, "
          f"{a.reps} interleaved reps; MFU vs bf16 peak {peak / 1e12:.2f} TFLOP/s ({how.split(' (')[0]})")
    print(" | ".join(h.ljust(w[i]) for i, h in enumerate(hdr)))
    print("-+-".join("-" * x for x in w))
    for r in rows:
        print(" | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
