"""Stage manifests: what a stage was asked to do, what it read, what it wrote, and how long it took.

Every artifact directory holds a ``manifest.json``. A stage whose manifest is complete and whose
fingerprint (config + upstream manifests) matches is skipped by ``kamado run``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import threading
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from kamado.folders import BOOKKEEPING

MANIFEST = "manifest.json"
_LIBS = ("torch", "transformers", "tokenizers", "sentencepiece", "peft", "numpy", "pyarrow", "ray")
# the digest manifests written before every file was hashed gave files over 256 MB as "large:SIZE:MTIME"
LEGACY_LARGE = "large:"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, streamed (about 0.7 s per GB on a 2-core Xeon with SHA extensions)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def digest_json(obj: Any) -> str:
    """Stable digest of a JSON-serialisable object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def digest_files(paths: Iterable[Path], root: Path | None = None) -> dict[str, str]:
    """SHA-256 of each file's content, whatever its size (relative names when ``root`` is given)."""
    out: dict[str, str] = {}
    for p in sorted(Path(p) for p in paths):
        if not p.is_file():
            continue
        name = str(p.relative_to(root)) if root else str(p)
        out[name] = sha256_file(p)
    return out


def digest_tree(root: Path, exclude: tuple[str, ...] = (MANIFEST, *BOOKKEEPING)) -> dict[str, str]:
    """Digest every file under ``root`` except the manifest itself and temporary files."""
    files = [p for p in root.rglob("*") if p.is_file() and p.name not in exclude and ".tmp" not in p.name]
    return digest_files(files, root)


def combined(digests: dict[str, str]) -> str:
    """One digest standing for a mapping of digests."""
    return digest_json(digests)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide a stage's numbers."""
    out = {"python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    try:
        out["kamado"] = metadata.version("kamado")
    except metadata.PackageNotFoundError:
        pass
    return out


def git_commit(cwd: Path | None = None) -> str | None:
    """The checkout's commit (with ``-dirty`` when there are local changes), or None outside git."""
    try:
        here = cwd or Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=here, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def write_text_atomic(path: Path, text: str, *, fsync: bool = False) -> None:
    """Write ``text`` (UTF-8) to a temporary name beside ``path`` and rename it into place: a reader sees the old
    file or the whole new one, never a part (temporary names are per process and thread). ``fsync``: the data
    reaches the disk before the rename (a checkpoint's ``state.json`` must survive a power cut)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}-{threading.get_ident()}")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (non-ASCII kept, unknown types as ``str``) with :func:`write_text_atomic`."""
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def write_manifest(
    out_dir: Path,
    *,
    stage: str,
    config: Any,
    inputs: dict[str, str] | None = None,
    counts: dict[str, Any] | None = None,
    timings: dict[str, float] | None = None,
    fingerprint: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/manifest.json`` (atomically) describing a finished stage; returns it."""
    outputs = digest_tree(out_dir)
    man = {
        "stage": stage,
        "status": "complete",
        "fingerprint": fingerprint,
        "config": config,
        "inputs": inputs or {},
        "outputs": outputs,
        "outputs_digest": combined(outputs),
        "counts": counts or {},
        "timings": timings or {},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "finished_ns": time.time_ns(),
        "versions": library_versions(),
        "git_commit": git_commit(),
        "host": platform.node(),
        **(extra or {}),
    }
    write_json_atomic(out_dir / MANIFEST, man)
    return man


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of a finished stage, or None when absent or unreadable."""
    p = Path(out_dir) / MANIFEST
    if not p.is_file():
        return None
    try:
        man = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return man if man.get("status") == "complete" else None


def verify_outputs(out_dir: Path, man: dict[str, Any] | None = None) -> list[str]:
    """Names of files whose digest no longer matches the manifest (missing, changed or truncated).

    A manifest written before every file was hashed holds ``large:SIZE:MTIME`` for files over 256 MB: those
    are checked by size only, the one thing it recorded (a copied run changes the mtime); re-run the stage to
    record their content digest."""
    man = man or read_manifest(out_dir)
    if man is None:
        return ["manifest.json"]
    bad = []
    for name, want in man.get("outputs", {}).items():
        p = Path(out_dir) / name
        if not p.is_file():
            bad.append(name)
            continue
        if isinstance(want, str) and want.startswith(LEGACY_LARGE):
            if want.split(":")[1] != str(p.stat().st_size):
                bad.append(name)
            continue
        if sha256_file(p) != want:
            bad.append(name)
    return bad
