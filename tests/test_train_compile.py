"""``train.compile: true``: the trainer's forward + loss runs through torch.compile (inductor, CPU with gcc)
and trains like the eager loop (same losses within bf16 rounding, both with the fused and the plain loss)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def _run(tmp: Path, **kw: object) -> tuple[list[float], object]:
    from kamado.model.presets import build_model, llama_config
    from kamado.train.config import TrainConfig
    from kamado.train.trainer import Trainer

    class Rows:
        def __init__(self) -> None:
            self.g = torch.Generator().manual_seed(0)

        def next_batch(self) -> dict:
            ids = torch.randint(0, 256, (4, 32), generator=self.g)
            return {"input_ids": ids, "labels": ids}

        def state_dict(self) -> dict:
            return {}

        def load_state_dict(self, d: dict) -> None:
            pass

    model = build_model(llama_config("micro", vocab_size=256), seed=0)
    cfg = TrainConfig(steps=4, batch_size=4, seq_len=32, warmup_steps=1, eval_every=0, ckpt_every=0, resume=False,
                      seed=0, **kw)
    tr = Trainer(model, Rows(), cfg, tmp, quiet=True)
    tr.setup()
    tr._start_logging()
    losses = [tr.step()["loss"] for _ in range(4)]
    return losses, tr


@pytest.mark.slow
@pytest.mark.parametrize("fused_ce", [True, False])
def test_compile_option_trains_like_eager(tmp_path: Path, fused_ce: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    eager, tr0 = _run(tmp_path / "eager", precision="bf16", fused_ce=fused_ce)
    comp, tr1 = _run(tmp_path / "compiled", precision="bf16", fused_ce=fused_ce, compile=True)
    assert tr0.forward == tr0.loss  # eager: the loss object itself
    assert tr1.forward is not tr1.loss and hasattr(tr1.forward, "_torchdynamo_orig_callable")
    assert tr1.loss.fused is fused_ce
    assert any(os.scandir(tmp_path / "inductor"))  # inductor really compiled kernels
    assert comp == pytest.approx(eager, rel=2e-2)
    assert comp[-1] < comp[0]
