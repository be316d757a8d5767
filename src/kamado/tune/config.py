"""Config of the instruction-tuning stage."""

from __future__ import annotations

from typing import Literal

from kamado.config import StrictModel
from kamado.monitor.alerts import AlertsConfig
from kamado.monitor.guard import GuardConfig
from kamado.train.config import OptimizerConfig, TrainConfig


class LoraSettings(StrictModel):
    """PEFT LoRA on the attention and MLP projections."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0  # PEFT's dropout copies each adapted input: ~1.7x slower steps on CPU at tiny sizes
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TuneConfig(StrictModel):
    """Full fine-tuning and/or LoRA on instruction data, compared side by side."""

    data: list[str] = ["dolly-ja"]
    methods: list[Literal["full", "lora"]] = ["full", "lora"]
    max_examples: int | None = None
    valid_fraction: float = 0.05
    train: TrainConfig = TrainConfig(steps=100, warmup_steps=5, eval_every=50, ckpt_every=50,
                                     optimizer=OptimizerConfig(lr=5e-4, min_lr=5e-5, weight_decay=0.0))
    lora: LoraSettings = LoraSettings()
    lora_lr: float = 1e-3
    packing: bool = True  # concatenate short examples into rows of up to train.seq_len tokens
    max_valid_examples: int = 200  # held-out examples used for the before/after validation loss
    keep_checkpoints: bool = False  # training checkpoints are deleted once the models are exported
    base: str | None = None  # HF model folder to tune instead of the pretrain stage's hf/ (CLI --base)
    guard: GuardConfig = GuardConfig()  # as pretrain.guard
    alerts: AlertsConfig = AlertsConfig()  # as pretrain.alerts
