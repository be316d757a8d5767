"""Checkpoints: written under a temporary name and renamed when complete; nothing is ever unpickled.

Layout of ``checkpoints/step_00000100/``: ``model.safetensors`` (full fp32 master weights),
``optim.safetensors`` + the optimizer's non-tensor state in ``state.json`` (step, data-sampler states,
RNG states, config). ``state.json`` is written last, and the folder is renamed from ``.tmp-…`` only
after every file is flushed, so a folder named ``step_*`` is always complete.

Sharded checkpoints (FSDP runs, ``TrainConfig.checkpoint_format``; :func:`save_sharded`): each rank writes
its own shard of the model and optimizer with ``torch.distributed.checkpoint`` (DCP) into ``dcp/`` (one
``__<rank>_0.distcp`` per rank and DCP's ``.metadata``), so no rank ever holds the full state. ``state.json``
(``"format": "sharded"``) keeps the rest as for a full checkpoint, plus the optimizer's non-tensor skeleton and
the size and SHA-256 of every file under ``dcp/`` (each rank digests its own shard). DCP's ``.metadata`` is a
pickle: it is read only after its digest matched the one recorded at save time; the tensors load with
``weights_only``. :func:`load` reads a sharded checkpoint into one process too (consolidated, for export).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from kamado import folders
from kamado.config import KamadoError

STEP_RE = re.compile(r"^step_(\d{8})$")


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def is_complete(path: Path) -> bool:
    """The one rule for a complete checkpoint folder (resume, rollback, export): ``state.json`` and the weights,
    ``model.safetensors`` or a sharded ``dcp/.metadata``. (:func:`latest` also checks their integrity.)"""
    p = Path(path)
    return p.is_dir() and (p / "state.json").is_file() and ((p / "model.safetensors").is_file()
                                                            or (p / "dcp" / ".metadata").is_file())


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (:func:`is_complete`) under ``root`` as (step, path), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = STEP_RE.match(p.name)
        if m and is_complete(p):
            out.append((int(m.group(1)), p))
    return sorted(out)


def verify(path: Path, *, deep: bool = True) -> str | None:
    """Why checkpoint ``path`` cannot be resumed from (``None`` when it is intact): state.json must parse, each
    safetensors file must have a sound header and exactly the size it lists, and (``deep``) the size and streamed
    SHA-256 recorded at save time."""
    from kamado.manifest import sha256_file as file_digest
    from kamado.model.integrity import safetensors_problem

    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"state.json unreadable ({e.__class__.__name__}: {e})"
    if state.get("format") == "sharded":
        files = state.get("files") or {}
        if "dcp/.metadata" not in files or not any(n.endswith(".distcp") for n in files):
            return "sharded checkpoint without an integrity record of its DCP files"
        missing = [n for n in files if not (path / n).is_file()]
        if missing:
            return f"{missing[0]}: missing"
    else:
        for name in ("model.safetensors", "optim.safetensors"):
            why = safetensors_problem(path / name)
            if why:
                return why
    for name, rec in (state.get("files") or {}).items():
        f = path / name
        if f.stat().st_size != rec.get("bytes"):
            return f"{name}: {f.stat().st_size} bytes, {rec.get('bytes')} when saved"
        if deep and rec.get("sha256") and file_digest(f) != rec["sha256"]:
            return f"{name}: content differs from its digest at save time"
    return None


def latest(root: Path) -> Path | None:
    """The newest checkpoint that passes :func:`verify`; a damaged newer one is named in a warning and skipped."""
    from kamado.ui import console

    cks = list_checkpoints(root)
    for i in range(len(cks) - 1, -1, -1):
        why = verify(cks[i][1])
        if why is None:
            return cks[i][1]
        nxt = f"falling back to {cks[i - 1][1].name}" if i else "no earlier checkpoint: starting from scratch"
        console.print(f"[yellow]warning:[/] checkpoint {cks[i][1]} is damaged ({why}); {nxt}", highlight=False,
                      soft_wrap=True)
    return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def flatten_optim(sd: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and a JSON-able skeleton."""
    import torch

    tensors: dict[str, torch.Tensor] = {}
    skel_state: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        entry = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                name = f"{pid}::{k}"
                tensors[name] = v.detach().contiguous().cpu()
                entry[k] = {"tensor": name}
            else:
                entry[k] = v
        skel_state[str(pid)] = entry
    return tensors, {"state": skel_state, "param_groups": sd["param_groups"],
                     "pid_is_int": all(isinstance(k, int) for k in sd["state"])}


def unflatten_optim(tensors: dict[str, Any], skel: dict[str, Any]) -> dict[str, Any]:
    state = {}
    for pid, entry in skel["state"].items():
        key: Any = int(pid) if skel.get("pid_is_int") else pid
        state[key] = {k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v for k, v in entry.items()}
    groups = []
    for g in skel["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def save(root: Path, step: int, model_sd: dict[str, Any], optim_sd: dict[str, Any], state: dict[str, Any],
         *, keep_last: int = 2, keep_every: int = 0) -> Path:
    """Write checkpoint ``step`` atomically, then prune old ones (keep the last K and every M-th)."""
    from safetensors.torch import save_file

    root = folders.mark(root, "checkpoints")
    final = step_dir(root, step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    folders.remove(tmp)
    try:
        tmp.mkdir()
        save_file({k: v.detach().contiguous().cpu() for k, v in model_sd.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt", "step": str(step)})
        otensors, oskel = flatten_optim(optim_sd)
        save_file(otensors, str(tmp / "optim.safetensors"), metadata={"format": "pt"})
        from kamado.manifest import sha256_file as file_digest

        files = {n: {"bytes": (tmp / n).stat().st_size, "sha256": file_digest(tmp / n)}
                 for n in ("model.safetensors", "optim.safetensors")}  # checked by verify() before a resume
        for name in ("model.safetensors", "optim.safetensors"):
            fd = os.open(tmp / name, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        state = dict(state, step=step, optimizer=oskel, files=files)
        return _publish(tmp, final, state, keep_last=keep_last, keep_every=keep_every)
    except Exception as e:
        if not folders.disk_full(e):
            raise
        _remove_quietly(tmp)  # the partial attempt; the earlier checkpoints are untouched
        last = latest(root)
        raise KamadoError(f"{root}: no space left on device while saving the checkpoint of step {step}; "
                          + (f"the last complete checkpoint ({last.name}) is intact. " if last else "")
                          + "Free some space (or lower train.keep_last) and resume with the same command") from None


def _publish(tmp: Path, final: Path, state: dict[str, Any], *, keep_last: int, keep_every: int) -> Path:
    """The last step of a save, once the tensor files in ``tmp`` are on disk: write ``state.json`` (the record
    that makes a checkpoint complete), fsync it and the folder, rename ``tmp`` to ``final`` atomically, then
    prune old checkpoints."""
    _write_state(tmp / "state.json", state)
    _fsync_dir(tmp)
    folders.remove(final)
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    prune(final.parent, keep_last=keep_last, keep_every=keep_every)
    return final


def _write_state(path: Path, state: dict[str, Any]) -> None:
    """``state.json`` written in full and fsynced under a temporary name, then renamed over ``path``."""
    from kamado.manifest import write_text_atomic

    write_text_atomic(path, json.dumps(state), fsync=True)


def update_state(path: Path, updates: dict[str, Any]) -> None:
    """Replace keys of checkpoint ``path``'s ``state.json`` atomically (after a rollback: the data position past the
    skipped window and the callbacks' state, so a resume from this checkpoint never replays that window)."""
    _write_state(Path(path) / "state.json", read_state(path) | updates)


def prune(root: Path, *, keep_last: int, keep_every: int) -> None:
    """Delete complete checkpoints beyond the last ``keep_last`` unless step % keep_every == 0; drop stale temps."""
    cks = list_checkpoints(root)
    keep = {s for s, _ in cks[-max(1, keep_last):]}
    for s, p in cks:
        if s not in keep and not (keep_every and s % keep_every == 0):
            _remove_quietly(p)
    for p in Path(root).glob(".tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid():
            _remove_quietly(p)


def _remove_quietly(p: Path) -> None:
    """Prune a checkpoint folder kamado wrote; a failure to delete never stops training."""
    with contextlib.suppress(OSError):
        folders.remove(p)


def load(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(model state, optimizer state, state.json) of a complete checkpoint: safetensors + JSON only.

    A sharded checkpoint is consolidated in this process (full tensors; the optimizer state keyed by parameter
    name, as ``torch.distributed.checkpoint.state_dict`` has it)."""
    from safetensors.torch import load_file

    path = Path(path)
    if is_sharded(path):
        return _load_sharded_full(path)
    state = json.loads((path / "state.json").read_text())
    state.pop("files", None)
    model_sd = load_file(str(path / "model.safetensors"))
    optim_sd = unflatten_optim(load_file(str(path / "optim.safetensors")), state.pop("optimizer"))
    return model_sd, optim_sd, state


def read_state(path: Path) -> dict[str, Any]:
    """``state.json`` of checkpoint ``path``."""
    return json.loads((Path(path) / "state.json").read_text(encoding="utf-8"))


def is_sharded(path: Path) -> bool:
    """Whether checkpoint ``path`` was written by :func:`save_sharded`."""
    return (Path(path) / "dcp" / ".metadata").is_file() and not (Path(path) / "model.safetensors").is_file()


def _split_optim(osd: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A DCP optimizer state dict (keyed by parameter name) as DCP tensors ``optim.<name>.<key>`` and a JSON skeleton."""
    tensors, skel = {}, {}
    import torch

    for fqn, st in osd["state"].items():
        entry = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{fqn}.{k}"] = v
                entry[k] = {"tensor": f"optim.{fqn}.{k}"}
            else:
                entry[k] = v
        skel[fqn] = entry
    return tensors, {"state": skel, "param_groups": osd["param_groups"]}


def _join_optim(tensors: dict[str, Any], skel: dict[str, Any]) -> dict[str, Any]:
    state = {fqn: {k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v for k, v in e.items()}
             for fqn, e in skel["state"].items()}
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in skel["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_sharded(root: Path, step: int, model_sd: dict[str, Any], optim_sd: dict[str, Any], state: dict[str, Any],
                 *, rank: int, world_size: int, keep_last: int = 2, keep_every: int = 0) -> Path | None:
    """Collective (every rank): write checkpoint ``step`` with DCP, each rank its own shard; atomic like :func:`save`.

    ``model_sd``/``optim_sd``: the *sharded* state dicts of ``torch.distributed.checkpoint.state_dict``
    (DTensors keyed by parameter name). Rank 0 writes ``state.json`` last and renames the folder; returns the
    checkpoint folder on rank 0, None elsewhere.
    """
    import torch.distributed as tdist
    import torch.distributed.checkpoint as dcp

    from kamado.manifest import sha256_file as file_digest

    root = Path(root)
    final = step_dir(root, step)
    box = [f".tmp-{final.name}-{os.getpid()}" if rank == 0 else None]
    tdist.broadcast_object_list(box, src=0)
    tmp = root / box[0]
    if rank == 0:
        folders.mark(root, "checkpoints")
        folders.remove(tmp)
        (tmp / "dcp").mkdir(parents=True)
    tdist.barrier()
    otensors, oskel = _split_optim(optim_sd)
    dcp.save({**{f"model.{k}": v for k, v in model_sd.items()}, **otensors},
             storage_writer=dcp.FileSystemWriter(str(tmp / "dcp"), single_file_per_rank=True, sync_files=True))
    # each rank digests the shard it wrote (rank 0 also DCP's metadata); rank 0 records them all
    mine = [f for f in sorted((tmp / "dcp").iterdir()) if f.name.startswith(f"__{rank}_")]
    if rank == 0:
        mine.append(tmp / "dcp" / ".metadata")
    recs: list[Any] = [None] * world_size
    tdist.all_gather_object(recs, {f"dcp/{f.name}": {"bytes": f.stat().st_size, "sha256": file_digest(f)}
                                   for f in mine})
    out = None
    if rank == 0:
        files = {k: v for r in recs for k, v in r.items()}
        _fsync_dir(tmp / "dcp")
        state = dict(state, step=step, format="sharded", optimizer=oskel, files=files)
        out = _publish(tmp, final, state, keep_last=keep_last, keep_every=keep_every)
    tdist.barrier()
    return out


def load_sharded(path: Path, model_sd: dict[str, Any], optim_sd: dict[str, Any]) -> tuple[dict[str, Any],
                                                                                          dict[str, Any], dict[str, Any]]:
    """Collective: read a sharded checkpoint into this rank's ``model_sd``/``optim_sd`` templates (the current sharded
    state dicts, filled in place); returns (model state, optimizer state, state.json) for ``set_state_dict``."""
    import torch.distributed.checkpoint as dcp

    from kamado.config import KamadoError

    path = Path(path)
    why = verify(path)  # the .metadata pickle is trusted only with the digest recorded at save time
    if why:
        raise KamadoError(f"{path}: {why}")
    state = json.loads((path / "state.json").read_text())
    state.pop("files", None)
    skel = state.pop("optimizer")
    otensors, _ = _split_optim(optim_sd)
    flat = {**{f"model.{k}": v for k, v in model_sd.items()}, **otensors}
    dcp.load(flat, storage_reader=dcp.FileSystemReader(str(path / "dcp")))
    msd = {k[len("model."):]: v for k, v in flat.items() if k.startswith("model.")}
    return msd, _join_optim(flat, skel), state


def _load_sharded_full(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """One process, no process group: a sharded checkpoint consolidated into plain (full) tensors."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    from kamado.config import KamadoError

    why = verify(path)
    if why:
        raise KamadoError(f"{path}: {why}")
    state = json.loads((path / "state.json").read_text())
    state.pop("files", None)
    skel = state.pop("optimizer")
    reader = dcp.FileSystemReader(str(path / "dcp"))
    meta = reader.read_metadata()
    flat = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in meta.state_dict_metadata.items()
            if isinstance(m, TensorStorageMetadata)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(flat, storage_reader=reader, no_dist=True)
    msd = {k[len("model."):]: v for k, v in flat.items() if k.startswith("model.")}
    return msd, _join_optim(flat, skel), state


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as JSON-able values."""
    import random

    import numpy as np
    import torch

    npst = np.random.get_state()
    out: dict[str, Any] = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(st: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = st["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(torch.tensor(st["torch"], dtype=torch.uint8))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in st["cuda"]])
