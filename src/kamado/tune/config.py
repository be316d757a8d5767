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

    r: int = Field(8, ge=1, description="LoRA rank (1 or more).")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator: the update is scaled by alpha / r.")
    # PEFT's dropout copies each adapted input: ~1.7x slower steps on CPU at tiny sizes
    dropout: float = Field(0.0, description="Dropout on the adapted inputs (0: none).")
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                      description="Projections that get an adapter.")


_TUNE_TRAIN = TrainConfig(steps=100, warmup_steps=5, eval_every=50, ckpt_every=50,
                          optimizer=OptimizerConfig(lr=5e-4, min_lr=5e-5, weight_decay=0.0))


def _merge(base: dict[str, Any], upd: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in upd.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class TuneConfig(StrictModel):
    """Full fine-tuning and/or LoRA on instruction data, compared side by side."""

    data: list[str] = Field(["dolly-ja"], description="Instruction data: data-set names (dolly-ja) or JSONL files.")
    methods: list[Literal["full", "lora"]] = Field(["full", "lora"], description="Tuning methods, in this order: "
                                                   "full and/or lora.")
    max_examples: int | None = Field(None, ge=1, description="Read at most this many records per source (1 or "
                                     "more; unset: all).")
    valid_fraction: float = Field(0.05, ge=0.0, lt=1.0, description="Share of the examples held out for the "
                                  "validation loss (0 to below 1).")
    train: TrainConfig = _TUNE_TRAIN
    lora: LoraSettings = LoraSettings()
    lora_lr: float = Field(1e-3, gt=0, description="Peak learning rate of LoRA (above 0; full fine-tuning uses "
                           "train.optimizer.lr).")
    packing: bool = Field(True, description="Concatenate short examples into rows of up to train.seq_len tokens.")
    max_valid_examples: int = Field(200, description="Held-out examples used for the before/after validation "
                                    "loss.")
    keep_checkpoints: bool = Field(False, description="Keep the training checkpoints (false: deleted once the "
                                   "models are exported).")
    base: str | None = Field(None, description="HF model folder to tune instead of the pretrain stage's hf/ "
                             "(the CLI's --base).")

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
