"""Checks a command makes before it touches anything: its output folder must not hold (or be) one of its
inputs, nor sit inside an input folder, and must be writable."""

from __future__ import annotations

import os
from pathlib import Path

from kamado import folders
from kamado.config import KamadoError


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def refuse_overlap(inputs: list[Path], out: Path, command: str) -> None:
    """Refuse when an input is ``out`` or lies inside it (the command would overwrite or delete it), or when
    ``out`` lies inside an input folder (its output would be read back as input next time)."""
    o = Path(out).expanduser().resolve()
    for p in inputs:
        r = Path(p).expanduser().resolve()
        if _within(r, o):
            raise KamadoError(
                f"{command}: the input {p} is inside the output folder --out {out}; writing there would overwrite "
                f"or delete it. Nothing was changed; choose another --out (e.g. {Path(out).parent / (o.name + '-2')})")
        if r.is_dir() and _within(o, r):
            raise KamadoError(f"{command}: --out {out} is inside the input folder {p}; its output would be read as "
                              "input. Nothing was changed; choose an --out outside it")


def check_writable(out: Path, option: str = "--out") -> None:
    """Refuse an output folder that cannot be created or written, before any work starts."""
    out = Path(out)
    existed = out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".kamado-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise KamadoError(f"{option} {out}: cannot create or write this folder ({e.strerror or e}); "
                          "choose a writable location") from None
    if not existed:
        try:
            out.rmdir()
        except OSError:
            pass


def swap_in(attempt: Path, out: Path) -> None:
    """Replace ``out`` by the finished ``attempt`` folder (the previous result, which must be kamado's, is removed
    only now)."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    folders.check_ours(out, "--out")
    if out.exists() or out.is_symlink():
        folders.replace(out, old)
    os.replace(attempt, out)
    folders.remove(old)
