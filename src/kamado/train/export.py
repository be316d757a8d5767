"""The Hugging Face side of a trained model: unwrap compiled/PEFT wrappers, read its config, export it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any


def unwrap(model: Any) -> Any:
    """The module under a ``torch.compile`` wrapper."""
    return getattr(model, "_orig_mod", model)


def is_peft(model: Any) -> bool:
    """A PEFT (LoRA) model: one that exports as an adapter."""
    m = unwrap(model)
    return hasattr(m, "peft_config") and hasattr(m, "get_base_model")


def hf_config(model: Any) -> Any:
    """The transformers config of ``model`` (of the base model under a PEFT wrapper), or None."""
    m = unwrap(model)
    cfg = getattr(m, "config", None)
    if cfg is not None and hasattr(m, "get_base_model"):  # peft
        cfg = m.get_base_model().config
    return cfg


def export_hf(model: Any, out: Path, *, tokenizer: Any = None, state: dict[str, Any] | None = None,
              is_main: bool = True, dtype: str = "float32") -> Path:
    """Write a Hugging Face directory: config.json, model.safetensors, generation config, tokenizer files.

    ``state``: the tensors to write (e.g. the fp32 master weights), by default the model's parameters.
    ``tokenizer``: a tokenizer folder to copy in, or an object with ``save_pretrained``. Written to a
    temporary folder and renamed, so ``out`` is either the old or the complete new export. A PEFT model
    is saved as its adapter (``save_pretrained``).
    """
    import torch
    from safetensors.torch import save_file

    from kamado import folders

    m = unwrap(model)
    if is_peft(m):
        if is_main:
            m.save_pretrained(str(out))
        return out
    sd = state if state is not None else {n: p.detach() for n, p in m.named_parameters()}
    if not is_main:
        return out
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    folders.check_ours(out, "model folder")  # an export never replaces a folder kamado did not write
    folders.remove(tmp)
    folders.mark(tmp, "hf export")
    tdt = getattr(torch, dtype)
    cfg = m.config
    if getattr(cfg, "tie_word_embeddings", False):
        sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
    save_file({k: v.detach().to("cpu", tdt).contiguous() for k, v in sd.items()}, str(tmp / "model.safetensors"),
              metadata={"format": "pt"})
    cfg.architectures = [type(m).__name__]
    cfg.use_cache = True  # training turned the KV cache off; generation wants it
    with contextlib.suppress(Exception):
        cfg.dtype = tdt
    cfg.save_pretrained(str(tmp))
    gen = getattr(m, "generation_config", None)
    if gen is not None:
        with contextlib.suppress(Exception):
            gen.save_pretrained(str(tmp))
    if tokenizer is not None:
        _write_tokenizer(tokenizer, tmp)
    folders.remove(out)
    tmp.rename(out)
    return out


def _write_tokenizer(tokenizer: Any, dest: Path) -> None:
    import shutil

    if isinstance(tokenizer, str | Path):
        for f in Path(tokenizer).iterdir():
            if f.is_file() and f.name not in ("manifest.json", "config.json") and not f.name.startswith("."):
                shutil.copy2(f, dest / f.name)
    else:
        tokenizer.save_pretrained(str(dest))
