"""kamado's training engine vs a plain Hugging Face ``Trainer``: same model, batch and tokens, on this machine.

Every contender is its own process (same thread count) that trains with its real loop; the contenders
take turns *step by step* (A B C D, A B C D, …): each waits, idle, until the conductor lets it run one
optimizer step, so load from other users of a shared machine hits all of them alike. The table shows the
median step throughput (the first steps, with warm-up and compilation, excluded), MFU against this
device's bf16 matmul peak, and the ratio to the faster HF Trainer configuration.

    .venv/bin/python benchmarks/train_throughput.py                  # tiny and small presets
    .venv/bin/python benchmarks/train_throughput.py --presets tiny --steps 20
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
# name: (loop, options, precision as the row states it). Same model, batch, sequence, data, optimizer (fused AdamW,
# lr 3e-3, cosine, weight decay 0.1, clip 1.0) for all; only the loop, the precision policy and compilation differ.
CONTENDERS = {
    "hf-trainer fp32": ("hf", {"bf16": False}, "fp32"),
    "hf-trainer bf16": ("hf", {"bf16": True}, "bf16 autocast, fp32 weights"),
    "hf-trainer bf16+compile": ("hf", {"bf16": True, "torch_compile": True}, "bf16 autocast, fp32 weights"),
    "kamado bf16-autocast": ("kamado", {"precision": "bf16-autocast"}, "bf16 autocast, fp32 weights"),
    "kamado bf16-autocast+compile": ("kamado", {"precision": "bf16-autocast", "compile": True},
                                     "bf16 autocast, fp32 weights"),
    "kamado bf16": ("kamado", {"precision": "bf16"}, "bf16 weights, fp32 master + AdamW state"),
    "kamado bf16+compile": ("kamado", {"precision": "bf16", "compile": True}, "bf16 weights, fp32 master + AdamW state"),
    "kamado bf16 unfused-ce": ("kamado", {"precision": "bf16", "fused_ce": False},
                               "bf16 weights, fp32 master + AdamW state"),
    "kamado bf16+compile unfused-ce": ("kamado", {"precision": "bf16", "compile": True, "fused_ce": False},
                                       "bf16 weights, fp32 master + AdamW state"),
}
DEFAULT = "hf-trainer bf16,hf-trainer bf16+compile,kamado bf16-autocast+compile,kamado bf16+compile"
WARMUP = 2


class Turn:
    """Worker side of the step-by-step handshake over stdin/stdout."""

    def __init__(self) -> None:
        self.t_go: float | None = None

    def begin(self) -> None:
        self.end()
        print("READY", flush=True)
        if sys.stdin.readline().strip() != "GO":
            sys.exit(0)
        self.t_go = time.perf_counter()

    def end(self) -> None:
        if self.t_go is not None:
            print(f"DONE {time.perf_counter() - self.t_go:.6f}", flush=True)
            self.t_go = None


def worker(kind: str, opts: dict, preset: str, seq: int, batch: int, steps: int, out: Path) -> None:
    import numpy as np
    import torch

    from kamado.model.presets import build_model, llama_config

    vocab = 8000
    model = build_model(llama_config(preset, vocab_size=vocab), seed=0)
    rows = np.random.default_rng(0).integers(0, vocab, size=(batch * steps, seq), dtype=np.int64)
    turn = Turn()
    if kind == "kamado":
        from kamado.train.config import TrainConfig
        from kamado.train.trainer import train

        class Rows:
            def __init__(self) -> None:
                self.i = 0

            def next_batch(self) -> dict:
                turn.begin()  # the previous step has ended: report it, wait for our turn
                ids = torch.from_numpy(rows[self.i: self.i + batch])
                self.i += batch
                return {"input_ids": ids, "labels": ids}

            def state_dict(self) -> dict:
                return {"i": self.i}

            def load_state_dict(self, d: dict) -> None:
                self.i = d["i"]

        cfg = TrainConfig(steps=steps, batch_size=batch, seq_len=seq, warmup_steps=2, eval_every=0, ckpt_every=0,
                          resume=False, seed=0, log_every=10**9, **opts)
        train(model, Rows(), cfg, out, quiet=True)  # the last step's end is not reported (checkpoint)
    else:
        from transformers import Trainer, TrainerCallback, TrainingArguments

        class Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN201
                turn.begin()

            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN201
                turn.end()

        ds = [{"input_ids": torch.from_numpy(r), "labels": torch.from_numpy(r)} for r in rows]
        args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, max_steps=steps,
                                 learning_rate=3e-3, warmup_steps=2, lr_scheduler_type="cosine", weight_decay=0.1,
                                 max_grad_norm=1.0, use_cpu=True, report_to=[], save_strategy="no",
                                 logging_strategy="no", dataloader_num_workers=0, seed=0, **opts)
        Trainer(model=model, args=args, train_dataset=ds, callbacks=[Timer()]).train()
    print("END", flush=True)


def conduct(names: list[str], preset: str, a: argparse.Namespace, steps: int, env: dict) -> dict[str, list[float]]:
    """Start one worker per contender and let them run one step at a time, in rotating order."""
    procs = {}
    for n in names:
        out = SCRATCH / f"{preset}-{n.replace(' ', '_')}"
        procs[n] = subprocess.Popen([sys.executable, __file__, "--seq-len", str(a.seq_len), "--batch", str(a.batch),
                                     "--worker", f"{n}|{preset}|{steps}|{out}"], env=env, text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    times: dict[str, list[float]] = {n: [] for n in names}
    live = list(names)
    r = 0

    def ready(n: str) -> bool:  # wait for the worker's READY (False: it ended)
        p = procs[n]
        line = p.stdout.readline().strip()
        while line and not line.startswith(("READY", "END")):
            line = p.stdout.readline().strip()
        if line != "READY":
            live.remove(n)
            if p.wait() != 0:
                print(f"{preset} {n}: worker failed (exit {p.returncode})", file=sys.stderr)
            return False
        p.stdin.write("GO\n")
        p.stdin.flush()
        return True

    def done(n: str) -> None:  # wait for the end of its step
        p = procs[n]
        line = p.stdout.readline().strip()
        while line and not line.startswith(("DONE", "READY", "END")):
            line = p.stdout.readline().strip()
        if line.startswith("DONE"):
            times[n].append(float(line.split()[1]))
        else:
            live.remove(n)
            p.wait()

    while live:
        order = live[r % len(live):] + live[: r % len(live)]
        if r < WARMUP:  # warm-up steps (compilation; not timed) run side by side to save wall time
            for n in [n for n in order if ready(n)]:
                done(n)
        else:
            for n in order:
                if ready(n):
                    done(n)
        r += 1
        counts = [len(v) for v in times.values()]
        print(f"  {preset}: round {r}, steps {counts}", file=sys.stderr, flush=True)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--contenders", default=DEFAULT, help=f"comma-separated, from: {', '.join(CONTENDERS)}")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=0, help="steps per contender (default: 10 tiny, 6 others)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        name, preset, steps, out = a.worker.split("|")
        kind, opts, _ = CONTENDERS[name]
        worker(kind, opts, preset, a.seq_len, a.batch, int(steps), Path(out))
        return

    import torch

    from kamado.model.flops import device_peak, model_flops
    from kamado.model.presets import llama_config

    SCRATCH.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, KAMADO_QUIET="1", TORCHINDUCTOR_CACHE_DIR=str(SCRATCH / "inductor"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    names = a.contenders.split(",")
    peak, how = device_peak("bf16", "cpu")
    rows, results = [], []
    for preset in a.presets.split(","):
        steps = a.steps or (10 if preset == "tiny" else 6)
        fpt = model_flops(llama_config(preset, vocab_size=8000), a.seq_len).flops_per_token
        times = conduct(names, preset, a, steps, env)
        med = {}
        for n, ts in times.items():
            ok = [t for t in ts[WARMUP:] if t == t]
            if ok:
                med[n] = a.batch * a.seq_len / statistics.median(ok)
        hf_best = max((v for n, v in med.items() if n.startswith("hf")), default=None)
        for n, v in med.items():
            mfu = fpt * v / peak
            ratio = v / hf_best if hf_best else float("nan")
            rows.append([preset, n, f"{v:,.0f}", f"{fpt * v / 1e12:.3f}", f"{100 * mfu:.1f}%", f"{ratio:.2f}×",
                         str(len([t for t in times[n][WARMUP:] if t == t]))])
            results.append({"preset": preset, "contender": n, "tok_s": v, "precision": CONTENDERS[n][2],
                            "compile": "compile" in n, "batch": a.batch, "seq_len": a.seq_len, "vocab": 8000,
                            "optimizer": "AdamW (fused)", "tflops": fpt * v / 1e12, "mfu": mfu,
                            "vs_hf_best": ratio, "step_s": times[n], "warmup_steps_excluded": WARMUP})
    hdr = ["preset", "contender", "tok/s (median)", "TFLOP/s", "MFU", "vs best HF", "steps"]
    w = [max(len(str(r[i])) for r in [hdr, *rows]) for i in range(len(hdr))]
    print(f"train throughput: batch {a.batch} × seq {a.seq_len}, vocab 8000, {torch.get_num_threads()} threads, "
          f"contenders interleaved step by step; MFU vs bf16 peak {peak / 1e12:.2f} TFLOP/s ({how.split(' (')[0]})")
    print(" | ".join(h.ljust(w[i]) for i, h in enumerate(hdr)))
    print("-+-".join("-" * x for x in w))
    for r in rows:
        print(" | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)))
    if a.json:
        a.json.write_text(json.dumps({"threads": torch.get_num_threads(), "peak_bf16_tflops": peak / 1e12,
                                      "rows": results}, indent=1))


if __name__ == "__main__":
    main()
