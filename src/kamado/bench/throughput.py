"""Training throughput of a preset on this device: tokens/s, TFLOP/s and MFU, through the real engine."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any


def measure(preset: str, precision: str, *, seq_len: int = 256, batch: int = 8, steps: int = 8,
            vocab: int | None = None, compile: bool = False, activation_checkpointing: bool = False,
            warmup: int = 2, scratch: Path | None = None) -> dict[str, Any]:
    """Train ``steps`` steps of ``preset`` on random tokens; median over the steps after ``warmup``."""
    import torch

    from kamado.jsonl import read_jsonl
    from kamado.model.flops import model_flops
    from kamado.model.presets import build_model, llama_config
    from kamado.train.config import TrainConfig
    from kamado.train.sources import TokenWindows, random_tokens
    from kamado.train.trainer import train

    mconf = llama_config(preset, vocab_size=vocab)
    model = build_model(mconf, seed=0)
    src = TokenWindows(random_tokens(max(4 * seq_len, 200_000), mconf.vocab_size), seq_len, batch, seed=0)
    cfg = TrainConfig(steps=max(steps, warmup + 1), batch_size=batch, seq_len=seq_len, precision=precision,
                      compile=compile, activation_checkpointing=activation_checkpointing, warmup_steps=1,
                      eval_every=0, ckpt_every=0, resume=False, seed=0, keep_last=1)
    base = Path(scratch) if scratch else None
    if base:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        res = train(model, src, cfg, Path(tmp), quiet=True)  # peak cached in the user cache
        recs = [r for r in read_jsonl(Path(tmp) / "metrics.jsonl", skip_bad=True) if "step_s" in r][warmup:]
    tps = statistics.median(r["tokens_per_s"] for r in recs)
    mf = model_flops(mconf, seq_len)
    peak = res.peak_tflops * 1e12
    device = "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    return {"preset": preset, "precision": precision + ("+compile" if compile else ""), "seq_len": seq_len,
            "batch": batch, "params": mf.params, "tokens_per_s": tps, "tflops": mf.flops_per_token * tps / 1e12,
            "mfu": mf.flops_per_token * tps / peak, "peak_tflops": res.peak_tflops, "device": device,
            "peak_source": res.extra.get("peak", ""), "mem_gb": recs[-1]["mem_gb"] if recs else None,
            "steps_timed": len(recs)}
