"""What kamado may touch on disk: the folders it wrote, the names that become paths, one writer per run.

Three rules, each in one place:

- **Ownership.** A folder is kamado's when it holds kamado's marker (``.kamado``, written when kamado creates
  or adopts a folder) or, for folders written before the marker existed, a kamado ``manifest.json``, a run
  attempt record, a corpus-clean plan, a dedup result, a token pack or a run's ``recipe.json`` beside folders that are
  kamado's. :func:`check_ours` refuses a non-empty foreign folder before any work; :func:`remove` deletes only
  inside a folder that is kamado's (``--overwrite``/``--force`` never reach further).
- **Names.** A name that becomes a folder (a corpus source, an experiment variant) is one plain path
  component: :func:`folder_name` (and the :data:`FolderName` type of the config models).
- **One writer.** :class:`RunLock` holds an OS lock (``fcntl.flock``) on ``.kamado.lock`` in the run folder,
  with the holder's PID and host in it; a second writer is refused naming them; a lock left by a dead process
  is taken over (the caller warns).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator

from kamado.config import KamadoError

MARKER = ".kamado"
LOCK = ".kamado.lock"
# files kamado keeps beside a stage's outputs (not part of its outputs digest)
BOOKKEEPING = (MARKER, LOCK)

_BAD_CHARS = frozenset('/\\:*?"<>|\0')


# ------------------------------------------------------------------------------------------------ names
def folder_name(name: Any, what: str = "name") -> str:
    """``name`` if it can be one folder name (a single plain path component); a :class:`KamadoError` naming
    ``what`` otherwise (``..``, ``a/b``, an absolute path, a hidden name, control characters, over 200 bytes)."""
    if not isinstance(name, str) or not name.strip():
        raise KamadoError(f"{what} {name!r}: must be a non-empty name")
    why = None
    if name in (".", "..") or "/" in name or "\\" in name:
        why = "is a path, not one name"
    elif name.startswith("."):
        why = "starts with a dot"
    elif bad := sorted({c for c in name if c in _BAD_CHARS or ord(c) < 32 or ord(c) == 127}):
        why = "contains " + " ".join(repr(c) for c in bad)
    elif name != name.strip():
        why = "starts or ends with a space"
    elif len(name.encode("utf-8")) > 200:
        why = "is longer than 200 bytes"
    if why:
        raise KamadoError(f"{what} {name!r} becomes a folder name and {why}: use letters, digits, '-', '_' "
                          "(e.g. ja_web)")
    return name


def _folder_name_value(v: str) -> str:
    try:
        return folder_name(v)
    except KamadoError as e:
        raise ValueError(str(e)) from None


FolderName = Annotated[str, AfterValidator(_folder_name_value)]
"""A config string that becomes a folder name (validated by :func:`folder_name` when the config is loaded)."""


# ------------------------------------------------------------------------------------------------ ownership
def _json(p: Path) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
    except (OSError, ValueError):
        return None


def _kamado_manifest(p: Path) -> bool:
    man = _json(p)
    return isinstance(man, dict) and isinstance(man.get("stage"), str) and "status" in man and "config" in man


def is_owned(folder: Path | str, _depth: int = 0) -> bool:
    """Whether ``folder`` itself is one kamado wrote (its marker, or the signs left before the marker existed)."""
    f = Path(folder)
    if not f.is_dir():
        return False
    if (f / MARKER).is_file() or (f / ".attempt.json").is_file() or (f / ".work" / "plan.json").is_file():
        return True
    if _kamado_manifest(f / "manifest.json"):
        return True
    stats = _json(f / "stats.json")
    if isinstance(stats, dict) and "exact_duplicates" in stats and "kept" in stats:  # a dedup result
        return True
    pack = _json(f / "pack.json")
    if isinstance(pack, dict) and {"format", "fingerprint", "sources"} <= set(pack):  # a token pack
        return True
    # an experiment folder from before the marker: experiment.json and its stage store of kamado's folders
    if _depth < 2 and (f / "experiment.json").is_file() and (f / ".stages").is_dir():
        try:
            return any(is_owned(c, _depth + 1) for c in (f / ".stages").iterdir() if c.is_dir())
        except OSError:
            return False
    # a run or experiment folder from before the marker: its recipe.json beside folders that are kamado's
    if _depth < 2 and ((f / "recipe.json").is_file() or (f / "experiment.json").is_file()):
        try:
            return any(is_owned(c, _depth + 1) for c in f.iterdir() if c.is_dir())
        except OSError:
            return False
    return False


def owner(path: Path | str) -> Path | None:
    """The folder kamado wrote that holds ``path`` (``path`` itself when it is one), or None."""
    p = Path(os.path.abspath(path))
    for d in (p, *p.parents):
        if is_owned(d):
            return d
    return None


def _empty(folder: Path) -> bool:
    """Nothing in it but kamado's lock file (taken before the folder is marked)."""
    try:
        return all(c.name == LOCK for c in folder.iterdir())
    except OSError:
        return False


def check_ours(folder: Path | str, what: str = "output folder", itself: bool = False) -> None:
    """Refuse a folder that exists, is not empty and is not kamado's (neither it nor a folder above it is one
    kamado wrote; with ``itself``, it must carry kamado's marker or manifest itself, as every stage folder
    does); nothing is changed."""
    f = Path(folder)
    if f.is_symlink() and not f.exists():
        return
    if f.exists() and not f.is_dir():
        raise KamadoError(f"{what} {f}: exists and is not a folder; nothing was changed. Choose another location")
    if f.is_dir() and not _empty(f) and not (is_owned(f) if itself else owner(f) is not None):
        raise KamadoError(f"{what} {f} is not empty and was not written by kamado (no {MARKER} marker or kamado "
                          "manifest in it); nothing was changed. Choose a new or empty folder: kamado never "
                          "deletes or overwrites files it did not write")


def mark(folder: Path | str, kind: str, **info: Any) -> Path:
    """Create ``folder`` if needed (after :func:`check_ours`) and put kamado's marker in it; returns it."""
    f = Path(folder)
    check_ours(f)
    f.mkdir(parents=True, exist_ok=True)
    if not (f / MARKER).is_file():
        doc = {"written_by": "kamado", "kind": kind, **info}  # no time or host: outputs stay byte-identical
        tmp = f / f"{MARKER}.tmp{os.getpid()}"
        tmp.write_text(json.dumps(doc, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, f / MARKER)
    return f


def remove(path: Path | str, missing_ok: bool = True) -> None:
    """Delete a file or folder that lies in (or is) a folder kamado wrote; anything else is refused.

    The one deletion every kamado command goes through: a stage folder, an earlier result, a temporary folder.
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        if missing_ok:
            return
        raise FileNotFoundError(str(p))
    if p.is_symlink():  # a link kamado made (a shared stage): the link goes, never what it points at
        if owner(p.parent) is None:
            raise KamadoError(f"{p}: not inside a folder kamado wrote; refusing to delete it")
        p.unlink()
        return
    if owner(p) is None:
        raise KamadoError(f"{p}: not written by kamado (no {MARKER} marker or kamado manifest in it or above it); "
                          "refusing to delete it. Move it away or choose another output folder")
    if p.is_dir():
        shutil.rmtree(p)
    else:
        p.unlink()


def replace(src: Path | str, dest: Path | str) -> None:
    """Move ``src`` over ``dest`` (``os.replace``); an existing ``dest`` must be kamado's (see :func:`remove`)."""
    d = Path(dest)
    if (d.exists() or d.is_symlink()) and owner(d if not d.is_symlink() else d.parent) is None:
        raise KamadoError(f"{d}: not written by kamado; refusing to replace it")
    os.replace(src, dest)


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a full disk (an ``OSError`` ENOSPC, or a library's error wrapping one, as safetensors'
    ``SafetensorError: ... StorageFull`` does)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return any(s in text for s in ("No space left on device", "StorageFull", "os error 28", "Disk quota exceeded"))


# ------------------------------------------------------------------------------------------------ one writer
def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


class RunLock:
    """An exclusive lock on a run folder while one process writes it (``with RunLock(folder) as lock``).

    A second holder is refused with a :class:`KamadoError` naming the first (PID, host, since when). The OS
    releases the lock when its holder dies; a lock file still naming a process that is gone is taken over, and
    :attr:`stale` describes it so the caller can warn.
    """

    def __init__(self, folder: Path | str, command: str = "kamado run") -> None:
        self.path = Path(folder) / LOCK
        self.command = command
        self.stale: str | None = None
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = self._read(fd)
            os.close(fd)
            who = (f"PID {held.get('pid')} on {held.get('host')}, since {held.get('since')}" if held
                   else "another process")
            raise KamadoError(f"{self.path.parent} is in use by another {held.get('command') or 'kamado'} "
                              f"({who}); one writer per run folder. Wait for it to finish, or use another --out "
                              f"(lock file {self.path})") from None
        old = self._read(fd)
        if old.get("pid"):
            host, pid = old.get("host"), old.get("pid")
            gone = "is no longer running" if host == socket.gethostname() and isinstance(pid, int) and (
                not pid_alive(pid) or pid == os.getpid()) else "no longer holds it"
            self.stale = (f"took over the lock of {self.path.parent} left by PID {pid} on {host} "
                          f"(since {old.get('since')}), which {gone}")
        doc = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "command": self.command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(doc) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        try:
            raw = os.pread(fd, 4096, 0)
            doc = json.loads(raw) if raw.strip() else {}
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def release(self) -> None:
        """Clear the holder's details and release the lock (the file stays: removing it would race)."""
        if self._fd is None:
            return
        import fcntl

        try:
            os.ftruncate(self._fd, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
