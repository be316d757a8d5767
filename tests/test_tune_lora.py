"""LoRA wrapping: only adapter weights train; the saved adapter reloads exactly; merging keeps outputs."""

from __future__ import annotations

import pytest
from test_tune_sft import build_model, build_tokenizer


@pytest.fixture(scope="module")
def base(tmp_path_factory, data_root):
    d = tmp_path_factory.mktemp("lora")
    tok = build_tokenizer(d / "t", data_root, vocab=2000)
    return build_model(d / "base", tok, seed=1)


def test_lora_trains_only_adapters_and_merges(base, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from kamado.tune.config import LoraSettings
    from kamado.tune.lora import load_adapter, merge, param_counts, save_adapter, trainable_names, wrap

    model = wrap(AutoModelForCausalLM.from_pretrained(str(base)), LoraSettings(r=4, alpha=8, dropout=0.0))
    names = trainable_names(model)
    assert names and all("lora_A" in n or "lora_B" in n for n in names)
    # every target module of every layer got an adapter
    assert sum("lora_A" in n for n in names) == 2 * 7
    trainable, total = param_counts(model)
    assert 0 < trainable < 0.2 * total

    # one optimizer step on adapter params only: base weights unchanged, adapter weights changed
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(5, 900, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(names)
    assert any("lora_B" in n for n in changed)

    model.eval()
    with torch.no_grad():
        want = model(input_ids=ids).logits
    save_adapter(model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    reloaded = load_adapter(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, want, atol=1e-6)
    merged = merge(model)
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        got = merged(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    # and the merged weights differ from the base: the adapter did something
    base_model = AutoModelForCausalLM.from_pretrained(str(base)).eval()
    with torch.no_grad():
        assert not torch.allclose(base_model(input_ids=ids).logits, got, atol=1e-6)


def test_unknown_target_module_is_a_clear_error(base):
    from transformers import AutoModelForCausalLM

    from kamado.config import KamadoError
    from kamado.tune.config import LoraSettings
    from kamado.tune.lora import wrap

    with pytest.raises(KamadoError, match="qkv_proj"):
        wrap(AutoModelForCausalLM.from_pretrained(str(base)), LoraSettings(target_modules=["qkv_proj"]))
