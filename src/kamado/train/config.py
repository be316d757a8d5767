"""Config of the trainer (kamado.train.trainer), shared by pretraining and instruction tuning."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kamado.config import StrictModel
from kamado.data.config import MixtureConfig
from kamado.model.config import ModelConfig
from kamado.monitor.alerts import AlertsConfig
from kamado.monitor.guard import GuardConfig


class OptimizerConfig(StrictModel):
    """AdamW with decoupled weight decay (no decay on norms and biases)."""

    lr: float = Field(3e-3, gt=0, description="Peak learning rate, reached after the warmup (above 0).")
    min_lr: float = Field(3e-4, ge=0, description="Learning rate at the end of the schedule (0 or more).")
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    fused: bool = True


class TrainConfig(StrictModel):
    """One training run: batch, schedule, precision, checkpoints."""

    steps: int = Field(200, ge=1, description="Optimizer steps (1 or more).")
    batch_size: int = Field(8, ge=1, description="Sequences (rows of seq_len tokens) per optimizer step, all ranks "
                            "together (1 or more).")
    grad_accum: int = Field(1, ge=1)
    seq_len: int = Field(256, ge=2, description="Tokens per sequence (2 or more; at most the model's context).")
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = Field(20, ge=0)
    decay_fraction: float = 0.2  # WSD: last fraction of steps decays
    grad_clip: float = 1.0
    precision: Literal["fp32", "bf16", "bf16-autocast", "bf16-pure", "fp8"] = Field(  # see kamado.train.precision
        "bf16", description="fp32; bf16 (bf16 compute, fp32 master weights); bf16-autocast (fp32 weights, bf16 "
        "matmuls); bf16-pure (bf16 weights and optimizer state); fp8 (as bf16, FP8 linear layers; extra fp8).")
    z_loss: float = 0.0
    activation_checkpointing: bool = False
    compile: bool = Field(False, description="torch.compile the model.")
    fused_ce: bool = True  # lm_head + cross-entropy in token chunks (plain LLaMA, no autocast/PEFT; FSDP too)
    log_every: int = 1
    eval_every: int = 50
    eval_batches: int = 4
    ckpt_every: int = 100
    keep_last: int = 2
    keep_every: int = 0  # also keep every M-th checkpoint (0: none)
    # auto: sharded (torch.distributed.checkpoint, one shard per rank, no full gather) under FSDP, else full
    checkpoint_format: Literal["auto", "full", "sharded"] = "auto"
    nproc: int = Field(1, ge=1, description="Data-parallel ranks on this machine (more than 1: torchrun + "
                       "FSDP2).")
    seed: int | None = Field(None, description="Seed of the model init and the data order (unset: the recipe's "
                             "seed).")
    resume: bool = Field(True, description="Continue from the latest complete checkpoint in the output folder "
                         "(false: start over).")
    # preemption (Slurm's SIGTERM, or the time-limit warning of `--signal=USR1@T`): every rank finishes its step,
    # a complete checkpoint of that step is saved and the process exits with 75 (kamado.config.EXIT_PREEMPTED)
    preempt_signals: list[Literal["SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP"]] = ["SIGTERM", "SIGUSR1"]
    tensorboard: bool = False  # also log to <out>/tensorboard
    wandb: str | None = None  # also log to this W&B project (offline unless WANDB_MODE says otherwise)
    mlflow: str | None = None  # also log to MLflow: a tracking URI, or a local folder (file store); extra `mlflow`


class PretrainConfig(StrictModel):
    """The pretraining stage: a model preset, the training settings and the data mixture."""

    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    mixture: MixtureConfig = MixtureConfig()
    guard: GuardConfig = GuardConfig()  # spike/NaN/hang detection, rollback, drills (kamado.train.guard)
    alerts: AlertsConfig = AlertsConfig()  # e-mail, webhook, W&B alerts (kamado.monitor.alerts)
    # continued pretraining (kamado.train.continued): start from this Hugging Face LLaMA folder (relative: to the
    # recipe); its config.json is the architecture (model.preset / model.overrides must agree with it)
    init_from: str | None = None
    # rows for pieces the model lacks (a tokenizer extended past its vocabulary): the mean of every base row, or
    # of the base pieces each new piece decomposes into under the base tokenizer
    new_rows: Literal["mean", "decompose"] = "mean"
