"""Run a function over work items: in this process, a local process pool, or Ray; one way to start Ray.

    from kamado.executor import map
    results = map(fn, items, executor="local", workers=4, progress=lambda r: advance(1))

    with Executor("ray", workers=8) as ex:          # several passes on one pool / Ray session
        a = ex.map(count, tasks)
        for r in ex.imap(encode, batches()):         # ordered streaming, bounded in flight
            ...

Rules every executor keeps, so output never depends on the executor or the worker count:

* results come back in input order (whatever order they finish in);
* a failing item stops the run with :class:`TaskError`, which names the item (index and path or
  value) and the original error (its ``__cause__``);
* ``fn`` and ``initializer`` must be importable module-level functions (they are sent by reference).
  ``initializer(*initargs)`` runs once in every worker process (this one included, for in-process
  work) before the first item of an :class:`Executor`.

``local``: one worker (or one item) runs in this process; more use a ``spawn`` process pool (no forked
copies of threads or CUDA state). ``ray``: Ray tasks (``num_cpus=1``, retried on worker loss) on the
cluster at ``address`` (``"auto"``, ``HOST:PORT``, or ``$RAY_ADDRESS``), else on a local cluster started
for the run with ``num_cpus=workers`` and no dashboard, shut down at the end. A Ray session that is
already initialized is joined, never shut down. Ray's scratch files go to ``$RAY_TMPDIR`` (the kamado
cache when unset) and token authentication is off for the local cluster (``RAY_AUTH_MODE=disabled``).
Across machines, inputs and outputs must be on storage every node sees.
"""

from __future__ import annotations

import os
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from kamado.config import KamadoError

EXECUTORS = ("local", "ray")


class TaskError(KamadoError):
    """A work item failed; the message names the item, ``__cause__`` is the original error."""

    def __init__(self, message: str, index: int, item: str, remote_traceback: str | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.item = item
        self.remote_traceback = remote_traceback


def describe_item(item: Any) -> str:
    """Short name of a work item for error messages: its ``path``/``file``/``name`` field, else its repr."""
    if isinstance(item, dict):
        for k in ("path", "file", "name"):
            if k in item:
                return str(item[k])
    if isinstance(item, (str, Path)):
        return str(item)
    r = repr(item)
    return r if len(r) <= 120 else r[:117] + "..."


# ------------------------------------------------------------------------------------ worker side
_INIT_KEY: list[Any] = [None]


class _Failed:
    """An exception raised by ``fn`` in a worker, sent back with its traceback (picklable)."""

    def __init__(self, exc: BaseException) -> None:
        self.tb = "".join(traceback.format_exception(exc))
        self.kind = type(exc).__name__
        self.message = str(exc)
        try:
            import pickle

            pickle.loads(pickle.dumps(exc))
            self.exc: BaseException | None = exc
        except Exception:  # noqa: BLE001 - an unpicklable exception travels as text
            self.exc = None


def _ensure_init(init: Callable[..., Any] | None, initargs: tuple, token: str) -> None:
    """Run ``init(*initargs)`` once per process and :class:`Executor` (``token`` names the executor)."""
    if init is not None and _INIT_KEY[0] != token:
        init(*initargs)
        _INIT_KEY[0] = token


def _call(payload: tuple[Callable[[Any], Any], Callable[..., Any] | None, tuple, str, int, Any]) -> tuple[int, Any]:
    """Worker entry point: ``(index, result)``, or ``(index, _Failed)`` when ``fn`` raised."""
    fn, init, initargs, token, i, item = payload
    try:
        _ensure_init(init, initargs, token)
        return i, fn(item)
    except Exception as e:  # noqa: BLE001 - sent back to the driver, which raises TaskError
        return i, _Failed(e)


# ------------------------------------------------------------------------------------ Ray
def _ray_tmpdir() -> Path:
    """``$RAY_TMPDIR``, set to the kamado cache folder when unset (created either way)."""
    if not os.environ.get("RAY_TMPDIR"):
        cache = os.environ.get("KAMADO_CACHE") or str(
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kamado")
        os.environ["RAY_TMPDIR"] = str(Path(cache) / "ray")
    p = Path(os.environ["RAY_TMPDIR"])
    p.mkdir(parents=True, exist_ok=True)
    return p


def start_ray(workers: int = 1, address: str | None = None) -> bool:
    """Join the Ray cluster at ``address`` / ``$RAY_ADDRESS`` (``auto`` finds a running one), or start a
    local one with ``num_cpus=workers``. Returns True when this call started or joined a session (the
    caller shuts it down), False when Ray was already initialized."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        _ray_tmpdir()
        ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
    return True


# ------------------------------------------------------------------------------------ executor
class Executor:
    """A local pool or a Ray session, kept across several :meth:`map` / :meth:`imap` calls."""

    def __init__(self, executor: str = "local", workers: int = 1, *, address: str | None = None,
                 initializer: Callable[..., Any] | None = None, initargs: tuple = (),
                 max_retries: int = 2) -> None:
        if executor not in EXECUTORS:
            raise KamadoError(f"unknown executor {executor!r}: use local or ray")
        self.executor = executor
        self.workers = max(1, int(workers))
        self.address = address
        self.init, self.initargs = initializer, tuple(initargs)
        self._token = uuid.uuid4().hex  # workers run the initializer again for another executor
        self.max_retries = max_retries
        self._pool: Any = None
        self._pool_size = 0
        self._ray_started = False
        self._remote: Any = None

    # -- lifecycle
    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: Any, *a: Any) -> None:
        self.close(abort=exc_type is not None)

    def close(self, abort: bool = False) -> None:
        if self._pool is not None:
            if abort:
                self._pool.terminate()
            else:
                self._pool.close()
            self._pool.join()
            self._pool = None
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False
            self._remote = None

    def _local_pool(self, n_items: int) -> Any:
        """The process pool (None: run in this process), grown up to ``workers`` when more items come."""
        want = min(self.workers, n_items)
        if want <= 1 and self._pool is None:
            return None
        if self._pool is None or (want > self._pool_size):
            if self._pool is not None:
                self._pool.close()
                self._pool.join()
            import multiprocessing as mp

            self._pool = mp.get_context("spawn").Pool(want)
            self._pool_size = want
        return self._pool

    def _ray(self) -> Any:
        if self._remote is None:
            import ray

            self._ray_started = start_ray(self.workers, self.address) or self._ray_started
            self._remote = ray.remote(num_cpus=1, max_retries=self.max_retries)(_call)
        return self._remote

    # -- results
    def _payload(self, fn: Callable[[Any], Any], i: int, item: Any) -> tuple:
        return (fn, self.init, self.initargs, self._token, i, item)

    @staticmethod
    def _unwrap(i: int, r: Any, item: Any, describe: Callable[[Any], str], label: str) -> Any:
        if not isinstance(r, _Failed):
            return r
        name = describe(item)
        msg = f"{label or 'task'} failed on item {i} ({name}): {r.kind}: {r.message}"
        raise TaskError(msg, i, name, r.tb) from (r.exc or RuntimeError(r.tb))

    def _ray_result(self, ref: Any, i: int, item: Any, describe: Callable[[Any], str], label: str) -> Any:
        import ray

        try:
            _, r = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - a lost worker or object (fn's own errors come back as _Failed)
            name = describe(item)
            cause = getattr(e, "cause", None) or e
            raise TaskError(f"{label or 'task'} failed on item {i} ({name}): {type(cause).__name__}: {cause}",
                            i, name) from e
        return self._unwrap(i, r, item, describe, label)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], *, progress: Callable[[Any], Any] | None = None,
            describe: Callable[[Any], str] = describe_item, label: str = "") -> list[Any]:
        """``[fn(x) for x in items]``, in input order; ``progress(result)`` as every item finishes (in
        the order they finish)."""
        items = list(items)
        if not items:
            return []
        tick = progress or (lambda r: None)
        out: list[Any] = [None] * len(items)
        if self.executor == "ray":
            import ray

            remote = self._ray()
            pending = {remote.remote(self._payload(fn, i, x)): i for i, x in enumerate(items)}
            try:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    for ref in done:
                        i = pending.pop(ref)
                        out[i] = self._ray_result(ref, i, items[i], describe, label)
                        tick(out[i])
            except BaseException:
                for ref in pending:
                    ray.cancel(ref)
                raise
            return out
        pool = self._local_pool(len(items))
        if pool is None:
            for i, x in enumerate(items):
                out[i] = self._unwrap(*_call(self._payload(fn, i, x)), x, describe, label)
                tick(out[i])
            return out
        try:
            for i, r in pool.imap_unordered(_call, [self._payload(fn, i, x) for i, x in enumerate(items)]):
                out[i] = self._unwrap(i, r, items[i], describe, label)
                tick(out[i])
        except BaseException:
            self.close(abort=True)
            raise
        return out

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any], *, max_in_flight: int | None = None,
             describe: Callable[[Any], str] = describe_item, label: str = "") -> Iterator[Any]:
        """``fn(x)`` for every ``x`` of a (lazy) iterable, yielded in input order, with at most
        ``max_in_flight`` items (default ``2 × workers``) submitted and not yet yielded."""
        limit = max(1, max_in_flight or 2 * self.workers)
        if self.executor == "local" and self.workers <= 1:
            for i, x in enumerate(items):
                yield self._unwrap(*_call(self._payload(fn, i, x)), x, describe, label)
            return
        if self.executor == "ray":
            remote = self._ray()
            submit: Callable[[int, Any], Any] = lambda i, x: remote.remote(self._payload(fn, i, x))  # noqa: E731
            result: Callable[[Any, int, Any], Any] = lambda h, i, x: self._ray_result(h, i, x, describe, label)  # noqa: E731
        else:
            pool = self._local_pool(self.workers)
            submit = lambda i, x: pool.apply_async(_call, (self._payload(fn, i, x),))  # noqa: E731
            result = lambda h, i, x: self._unwrap(*h.get(), x, describe, label)  # noqa: E731
        q: deque = deque()
        try:
            for i, x in enumerate(items):
                q.append((i, x, submit(i, x)))
                if len(q) >= limit:
                    j, y, h = q.popleft()
                    yield result(h, j, y)
            while q:
                j, y, h = q.popleft()
                yield result(h, j, y)
        except BaseException:
            if self.executor == "local":
                self.close(abort=True)
            raise


def map(fn: Callable[[Any], Any], items: Iterable[Any], executor: str = "local", workers: int = 1, *,  # noqa: A001
        address: str | None = None, initializer: Callable[..., Any] | None = None, initargs: tuple = (),
        progress: Callable[[Any], Any] | None = None, describe: Callable[[Any], str] = describe_item,
        label: str = "") -> list[Any]:
    """``[fn(x) for x in items]`` in input order on a fresh :class:`Executor` (closed at the end)."""
    with Executor(executor, workers, address=address, initializer=initializer, initargs=initargs) as ex:
        return ex.map(fn, items, progress=progress, describe=describe, label=label)


__all__ = ["EXECUTORS", "Executor", "TaskError", "describe_item", "map", "start_ray"]
