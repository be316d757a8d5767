"""LoRA with PEFT: wrap a LLaMA model, count what trains, save the adapter, merge it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.tune.config import LoraSettings


def wrap(model: Any, cfg: LoraSettings) -> Any:
    """A PEFT model with LoRA adapters on ``cfg.target_modules``; only adapter weights require grad."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in names]
    if missing:
        raise KamadoError(f"tune.lora.target_modules: {missing} not found in the model "
                          f"(linear layers: {sorted(n for n in names if n.endswith('proj'))})")
    import warnings

    lcfg = LoraConfig(task_type="CAUSAL_LM", r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=list(cfg.target_modules), bias="none")
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, lcfg)


def param_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def trainable_names(model: Any) -> list[str]:
    """Names of the parameters that require grad."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def save_adapter(model: Any, out: Path, tokenizer: Any | None = None) -> None:
    """``save_pretrained`` of the adapter only (adapter_config.json + adapter_model.safetensors)."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))


def merge(model: Any) -> Any:
    """The base model with the adapter folded into its weights (a plain ``LlamaForCausalLM``)."""
    return model.merge_and_unload()


def load_adapter(base_dir: Path, adapter_dir: Path) -> Any:
    """A PEFT model from an HF base folder and a saved adapter (for checks and serving)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    return PeftModel.from_pretrained(base, str(adapter_dir))
