"""The data catalog: named data sets resolved from a data root, with licenses, and checksum-verified downloads.

The data root is ``--data-root``, else ``$KAMADO_DATA_ROOT``, else ``../shared/data`` beside the
checkout (or the working directory) when it exists. Nothing is downloaded at run time unless asked
for with ``kamado data download``.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from kamado.config import KamadoError
from kamado.manifest import sha256_file


@dataclass(frozen=True)
class Dataset:
    """One catalogued file under the data root."""

    name: str
    path: str
    what: str | None
    license: str | None
    records: int
    sha256: str | None
    size: int | None
    url: str | None
    upstream: dict | None


@cache
def datasets() -> dict[str, Dataset]:
    """All catalogued data sets by name."""
    raw = json.loads(resources.files("kamado").joinpath("resources/datasets.json").read_text(encoding="utf-8"))
    return {e["name"]: Dataset(**e) for e in raw}


def default_data_root() -> Path | None:
    """``$KAMADO_DATA_ROOT``, else the first existing ``shared/data`` beside the checkout or the cwd."""
    env = os.environ.get("KAMADO_DATA_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    here = Path(__file__).resolve()
    for base in (Path.cwd(), *Path.cwd().parents[:2], *here.parents[:4]):
        cand = base / "shared" / "data"
        if cand.is_dir() and base.name != "shared":
            return cand.resolve()
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand.resolve()
    return None


def data_root(explicit: Path | str | None = None) -> Path:
    """The data root to use, or a clear error naming the ways to set it."""
    root = Path(explicit).expanduser().resolve() if explicit else default_data_root()
    if root is None or not root.is_dir():
        raise KamadoError(
            f"no data root found{f' at {root}' if root else ''}: pass --data-root DIR, set KAMADO_DATA_ROOT, "
            "or place the shared data at ../shared/data (see `kamado data list`)"
        )
    return root


def resolve(name_or_path: str, root: Path | None = None, base: Path | None = None) -> Path:
    """Resolve a catalogue name, a ``data:REL`` path under the data root, or a plain path.

    Plain relative paths are taken relative to ``base`` (the recipe's folder) when given.
    """
    if name_or_path in datasets():
        p = data_root(root) / datasets()[name_or_path].path
    elif name_or_path.startswith("data:"):
        p = data_root(root) / name_or_path[5:]
    else:
        p = Path(name_or_path).expanduser()
        if not p.is_absolute() and base is not None:
            p = base / p
    if not p.exists():
        raise KamadoError(f"{name_or_path}: no such file or folder ({p})")
    return p


def download(name: str, root: Path, url: str | None = None, timeout: float = 60.0) -> Path:
    """Download a catalogued data set into ``root`` and verify its SHA-256 before it is put in place.

    ``url`` overrides the catalogued location (a mirror); ``$KAMADO_DATA_MIRROR`` does the same for
    every set, as ``MIRROR/<path under the data root>``.
    """
    if name not in datasets():
        raise KamadoError(f"unknown data set {name!r}; `kamado data list` shows the names")
    ds = datasets()[name]
    mirror = os.environ.get("KAMADO_DATA_MIRROR")
    src = url or (f"{mirror.rstrip('/')}/{ds.path}" if mirror else ds.url)
    if not src:
        up = ds.upstream or {}
        raise KamadoError(
            f"{name} has no direct download (it was converted from {up.get('repo')}:{up.get('path')}"
            f"@{str(up.get('commit'))[:10]}); set KAMADO_DATA_MIRROR to a mirror of the data root"
        )
    dest = Path(root) / ds.path
    if dest.is_file() and ds.sha256 and sha256_file(dest) == ds.sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(src, timeout=timeout) as r, open(tmp, "wb") as f:
            while block := r.read(1 << 20):
                h.update(block)
                f.write(block)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise KamadoError(f"download of {name} from {src} failed: {e}") from e
    if ds.sha256 and h.hexdigest() != ds.sha256:
        tmp.unlink(missing_ok=True)
        raise KamadoError(f"checksum mismatch for {name} from {src}: got {h.hexdigest()[:16]}…, "
                          f"expected {ds.sha256[:16]}…; nothing was written")
    os.replace(tmp, dest)
    return dest
