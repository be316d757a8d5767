"""Parameter counts, FLOPs per token (PaLM: 6N + 12·L·H·Q·T) and device peaks for MFU: one place for all."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kamado.manifest import write_json_atomic

# Dense peak FLOP/s (no sparsity), per device.
GPU_PEAKS: dict[str, dict[str, float]] = {
    "A100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "fp8": 1513e12, "tf32": 378e12, "fp32": 51e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp8": 1979e12, "tf32": 495e12, "fp32": 67e12},
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp8": 1979e12, "tf32": 495e12, "fp32": 67e12},
}


@dataclass
class ModelFlops:
    params: int  # all parameters
    embedding: int  # input embedding table (a lookup, no FLOPs)
    non_embedding: int  # N of the 6N term: everything that is a matmul, lm_head included
    flops_per_token: float  # training (forward + backward) FLOPs per token at seq_len
    seq_len: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_flops(config: Any, seq_len: int) -> ModelFlops:
    """Counts for a LlamaConfig (no model needed); PaLM appendix B: 6N + 12·L·H·Q·T FLOPs per token."""
    h, v, n_layers = config.hidden_size, config.vocab_size, config.num_hidden_layers
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    hd = getattr(config, "head_dim", None) or h // heads
    ffn = config.intermediate_size
    attn = h * heads * hd + 2 * h * kv * hd + heads * hd * h
    mlp = 3 * h * ffn
    layer = attn + mlp + 2 * h
    emb = v * h
    head = 0 if getattr(config, "tie_word_embeddings", False) else v * h
    total = emb + n_layers * layer + h + head
    n = total - (0 if head == 0 else emb)  # tied: the table is the lm_head matmul
    fpt = 6.0 * n + 12.0 * n_layers * heads * hd * seq_len
    return ModelFlops(total, emb, n, fpt, seq_len)


def _cache_file(cache_dir: Path | None) -> Path:
    base = cache_dir or Path(os.environ.get("KAMADO_CACHE", Path(os.environ.get("XDG_CACHE_HOME",
                                                                                  Path.home() / ".cache")) / "kamado"))
    return Path(base) / "peak_flops.json"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def probe_matmul_peak(dtype: str = "bf16", n: int = 1024, seconds: float = 1.0, device: str = "cpu") -> float:
    """Best observed FLOP/s of an n×n matmul in ``dtype`` (best of several short timed bursts)."""
    import torch

    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    a = torch.randn(n, n, device=device).to(dt)
    b = torch.randn(n, n, device=device).to(dt)
    for _ in range(3):
        a @ b
    best = 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        reps = 4
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        dt_s = time.perf_counter() - t0
        best = max(best, reps * 2 * n**3 / dt_s)
    return best


def cpu_peak(dtype: str, seconds: float = 1.0) -> float:
    """CPU peak FLOP/s: the best of an all-threads probe and threads × a one-thread probe.

    On a shared machine the one-thread probe (small bursts, best of many) finds a quiet core more easily;
    matrix units are per core, so the per-core figure scales with the thread count.
    """
    import torch

    n_threads = torch.get_num_threads()
    full = probe_matmul_peak(dtype, n=1024, seconds=seconds)
    torch.set_num_threads(1)
    try:
        one = probe_matmul_peak(dtype, n=512, seconds=seconds)
    finally:
        torch.set_num_threads(n_threads)
    return max(full, one * n_threads)


def update_cpu_peak(dtype: str, value: float, cache_dir: Path | None = None) -> float:
    """Raise the cached CPU peak of ``dtype`` to ``value`` if it is higher (later quieter probes); returns it."""
    import torch

    dtype = "bf16" if dtype == "fp8" else dtype  # CPUs have no FP8 matmul units: FP8 runs at most at the bf16 peak
    key = f"{cpu_name()}|threads={torch.get_num_threads()}|{dtype}"
    path = _cache_file(cache_dir)
    try:
        cache = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        cache = {}
    cache[key] = max(float(cache.get(key, 0.0)), value)
    write_json_atomic(path, cache)
    return cache[key]


def device_peak(precision: str, device: str = "cpu", cache_dir: Path | None = None) -> tuple[float, str]:
    """(peak FLOP/s per device, how it was found). GPUs: datasheet table; CPU: a cached matmul probe."""
    dtype = "fp32" if precision == "fp32" else "fp8" if precision.startswith("fp8") else "bf16"
    if os.environ.get("KAMADO_PEAK_TFLOPS"):  # the user knows better (unlisted accelerator, shared machine)
        return float(os.environ["KAMADO_PEAK_TFLOPS"]) * 1e12, "KAMADO_PEAK_TFLOPS"
    if device.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name()
        for key in ("H100 PCIe", "H100", "H200", "A100"):
            if key in name and ("PCIe" in key) == ("PCIe" in name):
                return GPU_PEAKS[key][dtype if dtype != "fp32" else "tf32"], f"{key} datasheet"
        return probe_matmul_peak(dtype if dtype != "fp8" else "bf16", n=8192, device="cuda"), f"{name} probe"
    import torch

    dtype = "bf16" if dtype == "fp8" else dtype  # CPUs have no FP8 matmul units: FP8 runs at most at the bf16 peak
    key = f"{cpu_name()}|threads={torch.get_num_threads()}|{dtype}"
    path = _cache_file(cache_dir)
    cache: dict[str, float] = {}
    try:
        cache = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        cache = {}
    if key not in cache:
        cache[key] = cpu_peak("fp32" if dtype == "fp32" else "bf16")
        try:
            write_json_atomic(path, cache)
        except OSError:
            pass
    return cache[key], f"matmul probe ({path})"
