"""Checkpoints: written under a temporary name and renamed when complete; nothing is ever unpickled.

Layout of ``checkpoints/step_00000100/``: ``model.safetensors`` (full fp32 master weights),
``optim.safetensors`` + the optimizer's non-tensor state in ``state.json`` (step, data-sampler states,
RNG states, config). ``state.json`` is written last, and the folder is renamed from ``.tmp-…`` only
after every file is flushed, so a folder named ``step_*`` is always complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

STEP_RE = re.compile(r"^step_(\d{8})$")


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as (step, path), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = STEP_RE.match(p.name)
        if m and p.is_dir() and (p / "state.json").is_file() and (p / "model.safetensors").is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def verify(path: Path, *, deep: bool = True) -> str | None:
    """Why checkpoint ``path`` cannot be resumed from (``None`` when it is intact): state.json must parse, each
    safetensors file must have a sound header and exactly the size it lists, and (``deep``) the size and streamed
    SHA-256 recorded at save time."""
    from kamado.model.integrity import file_digest, safetensors_problem

    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"state.json unreadable ({e.__class__.__name__}: {e})"
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

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in model_sd.items()}, str(tmp / "model.safetensors"),
              metadata={"format": "pt", "step": str(step)})
    otensors, oskel = flatten_optim(optim_sd)
    save_file(otensors, str(tmp / "optim.safetensors"), metadata={"format": "pt"})
    from kamado.model.integrity import file_digest

    files = {n: {"bytes": (tmp / n).stat().st_size, "sha256": file_digest(tmp / n)}
             for n in ("model.safetensors", "optim.safetensors")}  # checked by verify() before a resume
    state = dict(state, step=step, optimizer=oskel, files=files)
    with (tmp / "state.json").open("w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    for name in ("model.safetensors", "optim.safetensors"):
        fd = os.open(tmp / name, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    prune(root, keep_last=keep_last, keep_every=keep_every)
    return final


def prune(root: Path, *, keep_last: int, keep_every: int) -> None:
    """Delete complete checkpoints beyond the last ``keep_last`` unless step % keep_every == 0; drop stale temps."""
    cks = list_checkpoints(root)
    keep = {s for s, _ in cks[-max(1, keep_last):]}
    for s, p in cks:
        if s not in keep and not (keep_every and s % keep_every == 0):
            shutil.rmtree(p, ignore_errors=True)
    for p in Path(root).glob(".tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid():
            shutil.rmtree(p, ignore_errors=True)


def load(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(model state, optimizer state, state.json) of a complete checkpoint: safetensors + JSON only."""
    from safetensors.torch import load_file

    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    state.pop("files", None)
    model_sd = load_file(str(path / "model.safetensors"))
    optim_sd = unflatten_optim(load_file(str(path / "optim.safetensors")), state.pop("optimizer"))
    return model_sd, optim_sd, state


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
