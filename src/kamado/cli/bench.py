"""``kamado bench``: hardware benchmark of the training engine (tokens/s, TFLOP/s, MFU per precision)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def bench(
    preset: Annotated[str, typer.Option("--preset", help="Model preset(s), comma-separated: tiny, small, 125m, "
                                        "1b, 7b.")] = "tiny",
    seq_len: Annotated[str, typer.Option("--seq-len", help="Sequence length(s), comma-separated.")] = "256",
    batch: Annotated[int, typer.Option("--batch", help="Sequences per step.")] = 8,
    precision: Annotated[str, typer.Option("--precision", help="Comma-separated: fp32, bf16, bf16-autocast, fp8 (torchao), "
                                           "bf16-pure.")] = "fp32,bf16",
    steps: Annotated[int, typer.Option("--steps", help="Steps per measurement (the first 2 are warm-up).")] = 8,
    reps: Annotated[int, typer.Option("--reps", help="Interleaved repetitions (medians reported).")] = 1,
    compile_: Annotated[bool, typer.Option("--compile/--no-compile", help="Also measure with torch.compile.")] = False,
    vocab: Annotated[int | None, typer.Option("--vocab", help="Vocabulary size (default: the preset's).")] = None,
    peaks: Annotated[bool, typer.Option("--peaks/--no-peaks", help="Also probe raw matmul peaks.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Measure training throughput of a preset on this device: tokens/s, TFLOP/s and MFU per precision.

    MFU counts model FLOPs (6N + 12·L·H·Q·T per token) against the device's peak: the datasheet for
    A100/H100/H200, a cached matmul probe on CPUs.

    Examples:
      kamado bench
      kamado bench --preset tiny,small --precision fp32,bf16,bf16-pure --steps 10 --reps 2
      kamado bench --preset 1b --seq-len 2048,4096 --precision bf16 --batch 4 --compile --json
    """
    import json
    import os
    import statistics
    import sys

    from kamado.bench.throughput import measure
    from kamado.config import KamadoError
    from kamado.model.flops import cpu_peak, probe_matmul_peak, update_cpu_peak
    from kamado.ui import console, progress, table

    presets = [p.strip() for p in preset.split(",") if p.strip()]
    precs = [p.strip() for p in precision.split(",") if p.strip()]
    seqs = [int(s) for s in seq_len.split(",") if s.strip()]
    bad = [p for p in precs if p not in ("fp32", "bf16", "bf16-autocast", "bf16-pure", "fp8")]
    if bad:
        raise KamadoError(f"--precision {','.join(bad)}: expected fp32, bf16, bf16-autocast, bf16-pure or fp8")
    base = Path(os.environ.get("KAMADO_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kamado"))
    combos = [(p, s, pr, c) for p in presets for s in seqs for pr in precs for c in ([False, True] if compile_ else [False])]
    samples: dict[tuple, list[dict]] = {k: [] for k in combos}
    with progress("bench", total=len(combos) * reps) as advance:
        for r in range(reps):
            for k in combos if r % 2 == 0 else combos[::-1]:
                p, s, pr, c = k
                samples[k].append(measure(p, pr, seq_len=s, batch=batch, steps=steps, vocab=vocab, compile=c,
                                          scratch=base / "bench"))
                advance(1)
    results = []
    for ms in samples.values():
        row = dict(ms[0])
        for f in ("tokens_per_s", "tflops", "mfu"):
            row[f] = statistics.median(m[f] for m in ms)
        row["reps"] = len(ms)
        results.append(row)
    out: dict = {"results": results}
    if peaks:
        import torch

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        if dev == "cuda":
            got = {dt: probe_matmul_peak(dt, n=8192, device=dev) for dt in ("fp32", "bf16")}
        else:  # a quieter probe than the cached one raises the cached CPU peak used for MFU
            got = {dt: cpu_peak(dt) for dt in ("fp32", "bf16")}
            for dt, v in got.items():
                update_cpu_peak(dt, v)
        out["matmul_peaks_tflops"] = {dt: round(v / 1e12, 4) for dt, v in got.items()}
    if json_out:
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
        return
    rows = [[r["preset"], r["seq_len"], r["precision"], f"{r['tokens_per_s']:,.0f}", f"{r['tflops']:.3f}",
             f"{100 * r['mfu']:.1f}%", f"{r['peak_tflops']:.2f}", f"{r['mem_gb']:.2f}" if r["mem_gb"] else "-"]
            for r in results]
    console.print(table(f"kamado bench: {results[0]['device']}, batch {batch}",
                        ["preset", "seq", "precision", "tok/s", "TFLOP/s", "MFU", "peak TFLOP/s", "mem GB"], rows))
    if peaks:
        console.print("raw matmul peak now: " + ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in
                                                           out["matmul_peaks_tflops"].items()))
