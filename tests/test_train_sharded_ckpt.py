"""Sharded (torch.distributed.checkpoint) checkpoints of FSDP runs, with 2 real gloo ranks under torchrun:
each rank writes its own shard, the checkpoint has an integrity record, resume (and a guard-style rollback)
gives the same loss curve, and a Hugging Face export made from the shards loads in transformers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from _train_driver import losses, run_driver


def _spec(out: Path, text: Path, **kw: object) -> dict:
    train = dict(steps=8, batch_size=4, seq_len=32, warmup_steps=2, eval_every=0, ckpt_every=3, keep_last=1,
                 keep_every=3, seed=11, optimizer={"lr": 3e-3, "min_lr": 3e-4})
    extra = {k: kw.pop(k) for k in ("hf", "rollback_at", "rollback_to") if k in kw}
    return {"out": str(out), "text": str(text), "max_bytes": 100_000, "train": train | kw} | extra


def _run(spec: dict, tmp: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    return run_driver(spec, tmp, nproc)


@pytest.fixture
def text(data_root: Path) -> Path:
    return data_root / "en_text" / "tinyshakespeare.txt"


@pytest.mark.slow
def test_sharded_checkpoint_resume_rollback_and_hf_export(tmp_path: Path, text: Path) -> None:
    from kamado.train import checkpoint as ckpt

    ref = tmp_path / "ref"
    r = _run(_spec(ref, text, hf=True), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    cks = dict(ckpt.list_checkpoints(ref / "checkpoints"))
    assert sorted(cks) == [3, 6, 8]
    c3 = cks[3]
    # one shard per rank plus DCP's metadata, no full model file; every file in the integrity record
    assert ckpt.is_sharded(c3) and not (c3 / "model.safetensors").exists()
    assert sorted(p.name for p in (c3 / "dcp").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    st = ckpt.read_state(c3)
    assert st["format"] == "sharded" and st["world_size"] == 2 and len(st["sampler"]) == 2
    assert set(st["files"]) == {"dcp/.metadata", "dcp/__0_0.distcp", "dcp/__1_0.distcp"}
    assert all(len(v["sha256"]) == 64 for v in st["files"].values())
    assert ckpt.verify(c3) is None

    # resume: a copy of the run cut back to step 3 continues with the same losses, bit for bit
    cut = tmp_path / "cut"
    shutil.copytree(ref, cut, ignore=shutil.ignore_patterns("hf"))
    for s in (6, 8):
        shutil.rmtree(cut / "checkpoints" / f"step_{s:08d}")
    r = _run(_spec(cut, text), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((cut / "result.json").read_text())["resumed_from"] == 3
    assert losses(cut) == losses(ref) and [s for s, _ in losses(ref)] == list(range(1, 9))

    # the run guard's rollback (Trainer.resume from inside a step) works with sharded checkpoints
    rb = tmp_path / "rb"
    r = _run(_spec(rb, text, rollback_at=5, rollback_to=3), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((rb / "result.json").read_text())["rolled"] == [3]
    seen = losses(rb)
    assert [s for s, _ in seen] == [1, 2, 3, 4, 4, 5, 6, 7, 8]  # step 4 logged before the rollback and again
    assert dict(seen) == dict(losses(ref))  # the replayed steps give the same losses

    # a damaged shard is caught by the integrity record, and the checkpoint is skipped
    bad = tmp_path / "bad"
    shutil.copytree(ref / "checkpoints", bad)
    with (bad / "step_00000008" / "dcp" / "__1_0.distcp").open("r+b") as f:
        f.seek(200)
        b = f.read(1)
        f.seek(200)
        f.write(bytes([b[0] ^ 0xFF]))
    assert "digest" in (ckpt.verify(bad / "step_00000008") or "")
    assert ckpt.latest(bad) == bad / "step_00000006"

    # Hugging Face export from the shards (one process, no process group) loads in transformers and equals
    # the export the 2-rank run made at its end (gathered weights)
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from kamado.train.pretrain import export_checkpoint

    export_checkpoint(ref, tmp_path / "hf_from_shards")
    a = load_file(str(tmp_path / "hf_from_shards" / "model.safetensors"))
    b = load_file(str(ref / "hf" / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    m = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf_from_shards"))
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    assert torch.isfinite(m(input_ids=ids).logits).all()
    msd, osd, state = ckpt.load(cks[8])  # consolidated in one process: full tensors and optimizer state
    assert all(torch.equal(msd[k], b[k]) for k in b) and state["step"] == 8
    assert {"exp_avg", "exp_avg_sq", "step"} <= set(next(iter(osd["state"].values())))


@pytest.mark.slow
def test_sharded_checkpoint_refuses_other_world_size(tmp_path: Path, text: Path) -> None:
    out = tmp_path / "run"
    r = _run(_spec(out, text, steps=3), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run(_spec(out, text, steps=5), tmp_path, nproc=1)
    assert r.returncode != 0 and "sharded checkpoint saved with 2 ranks, now 1" in r.stderr


def test_sharded_format_needs_fsdp(tmp_path: Path) -> None:
    from kamado.config import KamadoError
    from kamado.train.config import TrainConfig
    from kamado.train.trainer import Trainer

    tr = Trainer(None, None, TrainConfig(checkpoint_format="sharded"), tmp_path)  # type: ignore[arg-type]
    from kamado.train import distributed

    tr.dist = distributed.Dist()
    with pytest.raises(KamadoError, match="sharded needs more than one rank"):
        _ = tr.sharded_checkpoints
    tr.cfg = TrainConfig()
    assert tr.sharded_checkpoints is False
    tr.dist = distributed.Dist(world_size=2)
    assert tr.sharded_checkpoints is True
