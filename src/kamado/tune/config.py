"""Config of the instruction-tuning stage."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from kamado.config import StrictModel
from kamado.monitor.alerts import AlertsConfig
from kamado.monitor.guard import GuardConfig
from kamado.train.config import OptimizerConfig, TrainConfig


class LoraSettings(StrictModel):
    """PEFT LoRA on the attention and MLP projections."""

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = 0.0  # PEFT's dropout copies each adapted input: ~1.7x slower steps on CPU at tiny sizes
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


_TUNE_TRAIN = TrainConfig(steps=100, warmup_steps=5, eval_every=50, ckpt_every=50,
                          optimizer=OptimizerConfig(lr=5e-4, min_lr=5e-5, weight_decay=0.0))


def _merge(base: dict[str, Any], upd: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in upd.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class TuneConfig(StrictModel):
    """Full fine-tuning and/or LoRA on instruction data, compared side by side."""

    data: list[str] = ["dolly-ja"]
    methods: list[Literal["full", "lora"]] = ["full", "lora"]
    max_examples: int | None = Field(None, ge=1)
    valid_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    train: TrainConfig = _TUNE_TRAIN
    lora: LoraSettings = LoraSettings()
    lora_lr: float = Field(1e-3, gt=0)
    packing: bool = True  # concatenate short examples into rows of up to train.seq_len tokens
    max_valid_examples: int = 200  # held-out examples used for the before/after validation loss
    keep_checkpoints: bool = False  # training checkpoints are deleted once the models are exported
    base: str | None = None  # HF model folder to tune instead of the pretrain stage's hf/ (CLI --base)

    @field_validator("train", mode="before")
    @classmethod
    def _patch_tune_defaults(cls, v: Any) -> Any:
        """A partial ``train`` section patches the tuning defaults above (lr 5e-4, 100 steps, ...), not
        TrainConfig's pretraining defaults."""
        if isinstance(v, dict):
            return _merge(_TUNE_TRAIN.model_dump(), v)
        return v

    @field_validator("train")
    @classmethod
    def _one_process(cls, v: TrainConfig) -> TrainConfig:
        if v.nproc != 1:
            raise ValueError(f"nproc: instruction tuning runs in one process (got nproc: {v.nproc}); "
                             "remove tune.train.nproc")
        return v
    guard: GuardConfig = GuardConfig()  # as pretrain.guard
    alerts: AlertsConfig = AlertsConfig()  # as pretrain.alerts
