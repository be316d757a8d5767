"""The pretraining stage: a LLaMA preset trained on the packed ja/en mixture, exported as an HF model.

``run(cfg, ctx)`` reads ``ctx.input("data")`` (packed token shards) and ``ctx.input("tokenizer")``, and
writes ``ctx.out/metrics.jsonl``, ``ctx.out/checkpoints/``, ``ctx.out/hf/`` and ``ctx.out/pretrain.json``.
With ``train.nproc > 1`` it relaunches itself under ``torchrun`` (FSDP2, gloo on CPU / NCCL on GPU);
started by torchrun directly (``torchrun ... -m kamado.train.launch``) it trains as one of the ranks.
A partial earlier attempt in ``ctx.out`` is resumed from its latest complete checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.stage import StageContext
from kamado.train.config import PretrainConfig

RESULT = "pretrain.json"


def _tokenizer_dir(ctx: StageContext) -> Path:
    return Path(ctx.input("tokenizer"))


def build(cfg: PretrainConfig, ctx: StageContext, rank: int = 0, world_size: int = 1) -> tuple[Any, Any, Any]:
    """(model, mixture sampler, validation batches) for this rank."""
    from kamado.data.loader import MixtureSampler, valid_batches
    from kamado.model.presets import build_model, llama_config, tokenizer_ids

    tcfg = cfg.train
    pack_dir = Path(ctx.input("data"))
    pack_json = pack_dir / "pack.json"
    if not pack_json.is_file():
        raise KamadoError(f"{pack_dir}: no pack.json (run the data stage / `kamado data pack` first)")
    pack = json.loads(pack_json.read_text())
    from kamado.data.artifacts import check_pack_tokenizer

    check_pack_tokenizer(pack_dir, pack, _tokenizer_dir(ctx))  # a pack made with another tokenizer is refused
    ids = tokenizer_ids(_tokenizer_dir(ctx))
    vocab = max(int(ids["vocab_size"]), int(pack.get("vocab_size", 0)))
    seed = int(tcfg.seed if tcfg.seed is not None else ctx.seed)
    model = None
    if cfg.init_from:  # continued pretraining: the base model, its vocabulary grown to the tokenizer's
        from kamado.train.continued import start_model

        model = start_model(cfg, ctx.recipe_dir, _tokenizer_dir(ctx), vocab, ids, seed)
        mconf = model.config
    else:
        mconf = llama_config(cfg.model.preset, vocab_size=vocab, overrides=cfg.model.overrides,
                             bos_token_id=ids["bos_token_id"] if ids["bos_token_id"] is not None else pack.get("bos_id"),
                             eos_token_id=ids["eos_token_id"] if ids["eos_token_id"] is not None else pack.get("eos_id"),
                             pad_token_id=ids["pad_token_id"])
    if tcfg.seq_len > mconf.max_position_embeddings:
        raise KamadoError(f"pretrain.train.seq_len {tcfg.seq_len} exceeds the model's context "
                          f"{mconf.max_position_embeddings} (set model.overrides.max_position_embeddings)")
    if model is None:
        model = build_model(mconf, seed=seed)
    micro = tcfg.batch_size // (world_size * tcfg.grad_accum)
    sampler = MixtureSampler(pack_dir, cfg.mixture, seq_len=tcfg.seq_len, micro_batch=micro,
                             total_steps=tcfg.steps, seed=seed, rank=rank, world_size=world_size,
                             grad_accum=tcfg.grad_accum)
    valid = valid_batches(pack_dir, seq_len=tcfg.seq_len, batch_size=micro,
                          max_batches=max(1, tcfg.eval_batches))
    return model, sampler, valid


def counts(res: dict[str, Any]) -> dict[str, Any]:
    """Flat manifest counts from a TrainResult dict (through :class:`TrainCounts`, which readers use)."""
    from kamado.train.artifacts import TrainCounts

    return TrainCounts.from_result(res).to_counts()


def run_rank(cfg: PretrainConfig, ctx: StageContext) -> dict[str, Any]:
    """Train in this process (one rank of torchrun, or the only one); rank 0 writes ``pretrain.json``."""
    from kamado.manifest import write_json_atomic
    from kamado.train import distributed
    from kamado.train.guard import run_guarded
    from kamado.train.trainer import Trainer

    d = distributed.setup()
    tcfg = cfg.train
    if tcfg.seed is None:
        tcfg = tcfg.model_copy(update={"seed": ctx.seed})
        cfg = cfg.model_copy(update={"train": tcfg})

    def make_trainer(callbacks: list[Any]) -> Trainer:  # under the guard: a fresh model and sampler each attempt
        model, sampler, valid = build(cfg, ctx, d.rank, d.world_size)
        return Trainer(model, sampler, tcfg, ctx.out, valid=valid, hf_export=ctx.out / "hf",
                       tokenizer=_tokenizer_dir(ctx), description="pretrain", quiet=ctx.quiet or None,
                       callbacks=callbacks)

    res = run_guarded(make_trainer, cfg.guard, cfg.alerts, ctx.out, dist=d, can_restart=d.world_size == 1,
                      run=f"{ctx.run_dir.name if ctx.run_dir else ''}/{ctx.name}").to_dict()
    out = counts(res)
    if d.is_main:
        _save_floor(cfg, ctx)
        base = {}
        if cfg.init_from:  # the base model's folder and digest (kamado.train.continued)
            from kamado.train.continued import info

            base = {"init_from": info(cfg, ctx.recipe_dir)}
        write_json_atomic(ctx.out / RESULT, out | {"extra": res.get("extra", {}), "preset": cfg.model.preset} | base)
    return out


def _save_floor(cfg: PretrainConfig, ctx: StageContext) -> None:
    """The unigram floor of the training mixture beside the exported model (``kamado_unigram.npy``)."""
    from kamado.data.unigram import mixture_unigram, save_unigram

    hf = ctx.out / "hf"
    if (hf / "config.json").is_file():
        vocab = int(json.loads((hf / "config.json").read_text(encoding="utf-8"))["vocab_size"])
        save_unigram(hf, *mixture_unigram(Path(ctx.input("data")), cfg.mixture, vocab))


def _launch_restarting(cfg: PretrainConfig, ctx: StageContext, nproc: int, spec: Path) -> int:
    """torchrun under :func:`kamado.train.guard.restarting`: with ``guard.restart_on_hang`` launched again
    (resuming) after the watchdog stopped a hang. Raises :class:`~kamado.config.Preempted` when the ranks stopped
    on a preemption signal."""
    from kamado.config import Preempted
    from kamado.monitor.guard import EVENTS, read_events
    from kamado.train import distributed
    from kamado.train.guard import restarting

    def launch(restarts: int, will_restart: bool) -> int:
        seen = len(read_events(ctx.out / EVENTS))
        rc = distributed.launch(nproc, [str(spec)], log_dir=(ctx.cache_dir or ctx.out) / "torchrun")
        stop = [e for e in read_events(ctx.out / EVENTS)[seen:] if e.get("kind") == "preempted"]
        if rc != 0 and stop:
            d = stop[-1].get("detail") or {}
            raise Preempted(f"preempted by {d.get('signal')} after step {stop[-1].get('step')}: saved the complete "
                            f"checkpoint {d.get('checkpoint')}; run the same command again to resume from it",
                            step=int(stop[-1].get("step") or 0), checkpoint=d.get("checkpoint"),
                            signal=str(d.get("signal")))
        return rc

    return restarting(launch, cfg.guard, ctx.out, detail={"ranks": nproc},
                      hung=lambda rc, new: rc != 0 and any(e.get("kind") == "hang" for e in new))


def write_spec(cfg: PretrainConfig, ctx: StageContext, path: Path) -> Path:
    """The JSON that every torchrun rank reads (``python -m kamado.train.launch PATH``); for Slurm too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"stage": "pretrain", "config": cfg.model_dump(mode="json"), "ctx": {
        "name": ctx.name, "out": str(Path(ctx.out).resolve()),
        "inputs": {k: str(Path(v).resolve()) for k, v in ctx.inputs.items()},
        "data_root": str(ctx.data_root) if ctx.data_root else None, "seed": ctx.seed,
        "run_dir": str(ctx.run_dir) if ctx.run_dir else None,
        "cache_dir": str(ctx.cache_dir) if ctx.cache_dir else None, "quiet": ctx.quiet}}, indent=1))
    return path


def run(cfg: PretrainConfig, ctx: StageContext) -> dict[str, Any]:
    """The stage: train (relaunching under torchrun for ``nproc > 1``), export HF, return manifest counts."""
    from kamado.train import distributed

    nproc = cfg.train.nproc
    if nproc > 1 and not distributed.under_torchrun():
        if cfg.init_from:  # the ranks do not know the recipe's folder
            from kamado.train.continued import resolve

            cfg = cfg.model_copy(update={"init_from": str(resolve(cfg.init_from, ctx.recipe_dir).resolve())})
        spec = write_spec(cfg, ctx, ctx.out / ".launch.json")
        (ctx.out / RESULT).unlink(missing_ok=True)
        rc = _launch_restarting(cfg, ctx, nproc, spec)
        if rc != 0 or not (ctx.out / RESULT).is_file():
            raise KamadoError(f"torchrun with {nproc} ranks failed (exit {rc}); see the messages above")
        spec.unlink(missing_ok=True)
        res = json.loads((ctx.out / RESULT).read_text())
        res.pop("extra", None)
        res.pop("preset", None)
        return res
    return run_rank(cfg, ctx)


def export_checkpoint(run_dir: Path, out: Path, tokenizer: Path | None = None, step: int | None = None) -> Path:
    """Export a checkpoint of a training folder (latest, or ``step``) as a Hugging Face LLaMA directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from kamado.train import checkpoint as ckpt
    from kamado.train.export import export_hf

    run_dir = Path(run_dir)
    cks = dict(ckpt.list_checkpoints(run_dir / "checkpoints"))
    if not cks:
        raise KamadoError(f"{run_dir}/checkpoints: no complete checkpoint to export")
    if step is not None and step not in cks:
        raise KamadoError(f"no checkpoint at step {step} (have {sorted(cks)})")
    path = cks[step if step is not None else max(cks)]
    cfg_file = run_dir / "model_config.json"
    if not cfg_file.is_file():
        raise KamadoError(f"{cfg_file}: missing (written by the trainer at the start of training)")
    mconf = AutoConfig.from_pretrained(str(cfg_file))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(mconf)
    msd, _, _ = ckpt.load(path)
    model.load_state_dict(msd, strict=False, assign=True)
    return export_hf(model, out, tokenizer=tokenizer, state=msd)
