"""The cost of a pretraining run on paper: parameters, tokens, FLOPs, GPU-hours, days, memory per GPU, checkpoints.

Every figure is a formula over the recipe's model shape and training settings (no GPU, no model in memory):

- **FLOPs** = tokens × (6·N + 12·L·H·Q·T) (PaLM appendix B; N without the input embedding), see
  :func:`kamado.model.flops.model_flops`. A plain ``6·N·D`` with all parameters is reported beside it.
- **GPU-hours** = FLOPs / (MFU × peak): the MFU is the one given, else the median measured by ``kamado bench``
  for the same preset on the same device (``--bench FILE``), else 40% (assumed); ``mfu_source`` says which.
  FP8 (torchao float8 training) is planned as bf16 time / ``fp8_speedup`` (default 1.3×: published torchao
  Llama figures on H100 are 1.2–1.5× end to end), so its MFU stays relative to the bf16 peak.
- **Memory per GPU** under FSDP2 full sharding with kamado's ``bf16`` policy: fp32 parameters, fp32 gradients
  and two fp32 Adam moments sharded over all GPUs (16 bytes/param ÷ world) + the bf16 weights and gradients
  of the two layers being gathered (FSDP prefetches one ahead) + activations of one micro-batch + logits.
  Activations per layer and token in bf16 (LLaMA block, flash/SDPA attention stores no T×T matrix):
  attention 12·h bytes (norm in/out, q, k, v, attention output) + MLP 4·h + 8·ffn bytes (norm in/out, gate, up,
  silu(gate), product) — Korthikanti et al. 2022's 34·h for GPT blocks, adapted to SwiGLU. With activation
  checkpointing a layer keeps only its bf16 input (2·h bytes/token) and one layer is recomputed at a time.
  Logits: bf16 logits + their fp32 upcast + the fp32 gradient (10 bytes per token and vocabulary entry);
  kamado's fused output layer + cross-entropy works in chunks (one process or FSDP, with or without z-loss).
  A fixed 3 GB is added for the CUDA context, NCCL buffers and allocator fragmentation.
- **Checkpoint** = fp32 model + two Adam moments (12 bytes/param); the Hugging Face export is bf16 (2 bytes).
- **Goodput**: the fraction of wall time that trains: 1 − restart loss (default 5%: failures, restarts and
  re-done steps since the last checkpoint, cf. Llama 3's ~90% effective training time on 16k GPUs) minus
  evaluation (eval_batches forward micro-batches every eval_every steps) and checkpoint writes.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from kamado.config import KamadoError
from kamado.model.flops import GPU_PEAKS, model_flops


@dataclass(frozen=True)
class Device:
    name: str
    memory_gb: float  # usable HBM (GB = 1e9 bytes as on the datasheet)
    bf16: float  # dense peak FLOP/s
    fp8: float | None  # dense peak FLOP/s, None: no FP8 tensor cores
    hbm_tb_s: float  # memory bandwidth


# Datasheet figures (dense, no sparsity); peaks are those of kamado.model.flops.GPU_PEAKS.
DEVICES: dict[str, Device] = {
    "A100-40GB": Device("A100-40GB", 40, GPU_PEAKS["A100"]["bf16"], None, 1.555),
    "A100-80GB": Device("A100-80GB", 80, GPU_PEAKS["A100"]["bf16"], None, 2.039),
    "H100": Device("H100", 80, GPU_PEAKS["H100"]["bf16"], GPU_PEAKS["H100"]["fp8"], 3.35),
    "H100-PCIe": Device("H100-PCIe", 80, GPU_PEAKS["H100 PCIe"]["bf16"], GPU_PEAKS["H100 PCIe"]["fp8"], 2.0),
    "H200": Device("H200", 141, GPU_PEAKS["H200"]["bf16"], GPU_PEAKS["H200"]["fp8"], 4.8),
}
ALIASES = {"A100": "A100-80GB", "A100-80": "A100-80GB", "A100-40": "A100-40GB", "H100-SXM": "H100",
           "H100-80GB": "H100", "H200-141GB": "H200"}
OVERHEAD_GB = 3.0  # CUDA context, NCCL buffers, allocator fragmentation
DEFAULT_MFU = 0.40
DEFAULT_FP8_SPEEDUP = 1.3
DEFAULT_RESTART_LOSS = 0.05
CKPT_WRITE_GB_S = 2.0  # per node, to a parallel file system


def parse_devices(spec: str, nodes: int = 1) -> tuple[int, Device]:
    """``"8xH100"`` → (8 × nodes, H100). The count is per node."""
    m = re.fullmatch(r"\s*(?:(\d+)\s*[x×*]\s*)?([A-Za-z0-9-]+)\s*", spec)
    if not m:
        raise KamadoError(f"--devices {spec!r}: expected COUNTxNAME, e.g. 8xH100 (names: {', '.join(DEVICES)})")
    name = m.group(2).upper().replace("PCIE", "PCIe")
    name = ALIASES.get(name, name)
    if name not in DEVICES:
        raise KamadoError(f"--devices {spec!r}: unknown device {m.group(2)!r} (known: {', '.join(DEVICES)})")
    count = int(m.group(1) or 1)
    if count < 1 or nodes < 1:
        raise KamadoError("--devices and --nodes need at least one GPU and one node")
    return count * nodes, DEVICES[name]


@dataclass
class Memory:
    model_states_gb: float
    gathered_layers_gb: float
    activations_gb: float
    activations_no_ckpt_gb: float
    logits_gb: float
    total_gb: float
    total_no_ckpt_gb: float


def memory_per_gpu(cfg: Any, *, world: int, micro_batch: int, seq_len: int, fused_ce: bool = False,
                   ce_chunk_tokens: int = 8192) -> Memory:
    """Bytes per GPU under FSDP2 full sharding (see the module docstring for every term)."""
    mf = model_flops(cfg, seq_len)
    h, ffn, n_layers, vocab = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    head = 0 if getattr(cfg, "tie_word_embeddings", False) else vocab * h
    layer_params = (mf.params - mf.embedding - head - h) / n_layers
    states = 16.0 * mf.params / world
    gathered = 2 * layer_params * (2 + 2)  # bf16 weights + bf16 grads of two layers
    tokens = micro_batch * seq_len
    per_layer = (12 * h + 4 * h + 8 * ffn) * tokens
    act_no_ckpt = n_layers * per_layer
    act_ckpt = n_layers * 2 * h * tokens + per_layer
    logit_tokens = min(tokens, ce_chunk_tokens) if fused_ce else tokens
    logits = 10.0 * logit_tokens * vocab
    gb = 1e9
    over = OVERHEAD_GB * gb
    return Memory(states / gb, gathered / gb, act_ckpt / gb, act_no_ckpt / gb, logits / gb,
                  (states + gathered + act_ckpt + logits + over) / gb,
                  (states + gathered + act_no_ckpt + logits + over) / gb)


@dataclass
class Plan:
    preset: str
    params: int
    non_embedding_params: int
    vocab_size: int
    seq_len: int
    steps: int
    batch_size: int
    tokens: float
    flops: float
    flops_6nd: float
    flops_per_token: float
    device: str
    gpus: int
    nodes: int
    precision: str
    mfu: float
    mfu_source: str
    peak_tflops: float
    tokens_per_s_per_gpu: float
    gpu_hours: float
    days: float
    goodput: float
    goodput_parts: dict[str, float]
    gpu_hours_with_goodput: float
    days_with_goodput: float
    micro_batch: float
    grad_accum: int
    activation_checkpointing: bool
    memory_per_gpu_gb: float
    memory_per_gpu_gb_no_ckpt: float
    memory: dict[str, float]
    device_memory_gb: float
    fits: bool
    fits_no_ckpt: bool
    largest_micro_batch_that_fits: int
    checkpoint_gb: float
    export_gb: float
    corpus: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measured_mfu(bench: dict | list, preset: str, device: str, precision: str = "bf16") -> float | None:
    """Median MFU of ``kamado bench --json`` rows for ``preset`` on a GPU whose name contains ``device``."""
    rows = bench.get("results", []) if isinstance(bench, dict) else bench
    dev = device.split("-")[0].lower()
    got = [float(r["mfu"]) for r in rows if r.get("preset") == preset and dev in str(r.get("device", "")).lower()
           and str(r.get("precision", "")).split("+")[0] == precision and r.get("mfu")]
    return statistics.median(got) if got else None


def make_plan(model_cfg: Any, *, preset: str, steps: int, batch_size: int, seq_len: int, grad_accum: int = 1,
              devices: str = "8xH100", nodes: int = 1, precision: str = "bf16", mfu: float | None = None,
              bench: dict | list | None = None, fp8_speedup: float = DEFAULT_FP8_SPEEDUP,
              activation_checkpointing: bool = True, fused_ce: bool = True,
              eval_every: int = 0, eval_batches: int = 0, ckpt_every: int = 0,
              restart_loss: float = DEFAULT_RESTART_LOSS, corpus: dict[str, Any] | None = None) -> Plan:
    """A plan for ``steps`` optimizer steps of ``batch_size`` sequences (all GPUs together) of ``seq_len``."""
    world, dev = parse_devices(devices, nodes)
    if precision not in ("bf16", "fp8"):
        raise KamadoError(f"--precision {precision!r}: expected bf16 or fp8")
    if precision == "fp8" and dev.fp8 is None:
        raise KamadoError(f"{dev.name} has no FP8 tensor cores (FP8 needs Hopper: H100, H200)")
    notes: list[str] = []
    mf = model_flops(model_cfg, seq_len)
    tokens = float(steps) * batch_size * seq_len
    flops = mf.flops_per_token * tokens
    if mfu is not None:
        source = "given"
    else:
        got = measured_mfu(bench, preset, dev.name) if bench is not None else None
        if got is not None:
            mfu, source = got, f"measured by kamado bench ({preset}, {dev.name})"
        else:
            mfu, source = DEFAULT_MFU, "assumed (no kamado bench result for this preset and device)"
    if not 0 < mfu <= 1:
        raise KamadoError(f"MFU {mfu} must be in (0, 1]")
    speed = fp8_speedup if precision == "fp8" else 1.0
    if precision == "fp8":
        notes.append(f"FP8: bf16 time / {speed:g} (torchao float8 training; the FP8 peak is "
                     f"{dev.fp8 / 1e12:.0f} TFLOP/s but attention, norms and communication stay bf16)")
    eff = mfu * dev.bf16 * speed  # achieved model FLOP/s per GPU
    gpu_seconds = flops / eff
    gpu_hours = gpu_seconds / 3600
    days = gpu_hours / world / 24

    per_step = world * grad_accum
    micro = batch_size / per_step
    if batch_size % per_step:
        notes.append(f"batch_size {batch_size} is not a multiple of GPUs × grad_accum = {per_step}: "
                     "kamado will refuse it; choose grad_accum so that it divides")
    fused = fused_ce  # one process or FSDP, with or without z-loss
    mb = max(1, math.ceil(micro))
    mem = memory_per_gpu(model_cfg, world=world, micro_batch=mb, seq_len=seq_len, fused_ce=fused)
    fits = mem.total_gb <= dev.memory_gb
    fits_no = mem.total_no_ckpt_gb <= dev.memory_gb
    mem_used = mem.total_gb if activation_checkpointing else mem.total_no_ckpt_gb
    largest = 0
    for m in range(1, 257):
        t = memory_per_gpu(model_cfg, world=world, micro_batch=m, seq_len=seq_len, fused_ce=fused)
        if (t.total_gb if activation_checkpointing else t.total_no_ckpt_gb) > dev.memory_gb:
            break
        largest = m
    if mem_used > dev.memory_gb:
        if largest:
            accum = math.ceil(batch_size / (world * largest))
            while batch_size % (world * accum) and accum < batch_size:
                accum += 1
            notes.append(f"micro-batch {mb} × {seq_len} needs {mem_used:.0f} GB > {dev.memory_gb:.0f} GB: set "
                         f"grad_accum: {accum} (micro-batch {batch_size // (world * accum)}) to fit")
        else:
            notes.append(f"even one sequence of {seq_len} does not fit in {dev.memory_gb:.0f} GB: use more GPUs, "
                         "activation checkpointing or tensor parallelism")

    # goodput: restarts, evaluation (forward only: 1/3 of a training step's FLOPs per token), checkpoints
    parts = {"restarts": restart_loss}
    if eval_every and eval_batches:
        eval_tokens = eval_batches * mb * world * seq_len
        parts["eval"] = eval_tokens / 3 / (eval_every * batch_size * seq_len)
    ckpt_gb = 12.0 * mf.params / 1e9
    if ckpt_every:
        step_s = batch_size * seq_len * mf.flops_per_token / (eff * world)
        write_s = ckpt_gb / (CKPT_WRITE_GB_S * nodes)
        parts["checkpoints"] = write_s / (ckpt_every * step_s)
    goodput = max(0.05, 1.0 - sum(parts.values()))

    corp = dict(corpus or {})
    if corp.get("mb_per_s_per_core"):
        text_gb = tokens * corp.get("bytes_per_token", 4.0) / max(corp.get("kept_fraction", 0.5), 1e-6) / \
            max(corp.get("epochs", 1.0), 1e-6) / 1e9
        corp["raw_text_gb"] = round(text_gb, 1)
        corp["core_hours"] = round(text_gb * 1e3 / corp["mb_per_s_per_core"] / 3600, 1)

    return Plan(
        preset=preset, params=mf.params, non_embedding_params=mf.non_embedding, vocab_size=model_cfg.vocab_size,
        seq_len=seq_len, steps=steps, batch_size=batch_size, tokens=tokens, flops=flops,
        flops_6nd=6.0 * mf.params * tokens, flops_per_token=mf.flops_per_token, device=dev.name, gpus=world,
        nodes=nodes, precision=precision, mfu=mfu, mfu_source=source, peak_tflops=dev.bf16 / 1e12,
        tokens_per_s_per_gpu=eff / mf.flops_per_token, gpu_hours=gpu_hours, days=days, goodput=goodput,
        goodput_parts={k: round(v, 4) for k, v in parts.items()}, gpu_hours_with_goodput=gpu_hours / goodput,
        days_with_goodput=days / goodput, micro_batch=micro, grad_accum=grad_accum,
        activation_checkpointing=activation_checkpointing, memory_per_gpu_gb=mem.total_gb,
        memory_per_gpu_gb_no_ckpt=mem.total_no_ckpt_gb,
        memory={k: round(v, 2) for k, v in asdict(mem).items()}, device_memory_gb=dev.memory_gb, fits=fits,
        fits_no_ckpt=fits_no, largest_micro_batch_that_fits=largest, checkpoint_gb=ckpt_gb,
        export_gb=2.0 * mf.params / 1e9, corpus=corp, notes=notes,
    )


def plan_rows(p: Plan) -> list[tuple[str, str]]:
    """(quantity, value) rows for a table."""
    fp = f"{p.tokens_per_s_per_gpu:,.0f}"
    rows = [
        ("model", f"{p.preset}: {p.params / 1e9:.2f}B params ({p.non_embedding_params / 1e9:.2f}B non-embedding), "
                  f"vocab {p.vocab_size:,}"),
        ("tokens", f"{p.tokens / 1e12:.3f}T = {p.steps:,} steps × {p.batch_size:,} seq × {p.seq_len:,}"),
        ("FLOPs", f"{p.flops:.3e} (6ND alone {p.flops_6nd:.3e}; {p.flops_per_token / 1e9:.1f} GFLOP/token)"),
        ("devices", f"{p.gpus} × {p.device} ({p.nodes} node{'s' if p.nodes > 1 else ''}), {p.precision}"),
        ("MFU", f"{100 * p.mfu:.1f}% of {p.peak_tflops:.0f} TFLOP/s bf16, {p.mfu_source}"),
        ("throughput", f"{fp} tokens/s/GPU"),
        ("GPU-hours", f"{p.gpu_hours:,.0f} (with goodput {100 * p.goodput:.1f}%: {p.gpu_hours_with_goodput:,.0f})"),
        ("days", f"{p.days:.1f} on {p.gpus} GPUs (with goodput: {p.days_with_goodput:.1f})"),
        ("goodput", ", ".join(f"{k} {100 * v:.2f}%" for k, v in p.goodput_parts.items())),
        ("micro-batch", f"{p.micro_batch:g} seq/GPU × grad_accum {p.grad_accum}"),
        ("memory/GPU", f"{p.memory_per_gpu_gb:.1f} GB with activation checkpointing "
                       f"({'fits' if p.fits else 'does NOT fit'} in {p.device_memory_gb:.0f} GB), "
                       f"{p.memory_per_gpu_gb_no_ckpt:.1f} GB without ({'fits' if p.fits_no_ckpt else 'does not fit'})"),
        ("memory parts", f"states {p.memory['model_states_gb']:.1f}, gathered layers "
                         f"{p.memory['gathered_layers_gb']:.1f}, activations {p.memory['activations_gb']:.1f} "
                         f"(no ckpt {p.memory['activations_no_ckpt_gb']:.1f}), logits {p.memory['logits_gb']:.1f}, "
                         f"+{OVERHEAD_GB:g} GB overhead"),
        ("largest micro-batch", f"{p.largest_micro_batch_that_fits} × {p.seq_len}"),
        ("checkpoint", f"{p.checkpoint_gb:.1f} GB (fp32 weights + Adam); HF export {p.export_gb:.1f} GB bf16"),
    ]
    if p.corpus.get("core_hours") is not None:
        rows.append(("corpus", f"{p.corpus['raw_text_gb']:,.0f} GB raw text at {p.corpus['mb_per_s_per_core']:g} "
                               f"MB/s per core ({p.corpus.get('mb_source', 'given')}): "
                               f"{p.corpus['core_hours']:,.0f} core-hours"))
    rows += [("note", n) for n in p.notes]
    return rows
