"""Simple batch sources over a flat token array: for tests, benchmarks and ``kamado bench``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any


class TokenWindows:
    """Random ``seq_len`` windows of a 1-D token array; step ``s``'s global batch is fixed by (seed, s).

    Rank ``r`` of ``world_size`` takes its slice of the global batch, so one process with the whole batch and
    N processes with a slice each see the same sequences. State: the number of batches drawn.
    """

    def __init__(self, tokens: Any, seq_len: int, micro_batch: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, grad_accum: int = 1) -> None:
        import numpy as np

        self.tokens = np.asarray(tokens)
        if len(self.tokens) <= seq_len + 1:
            raise ValueError(f"need more than {seq_len + 1} tokens, got {len(self.tokens)}")
        self.seq_len, self.micro_batch, self.seed = seq_len, micro_batch, seed
        self.rank, self.world_size, self.grad_accum = rank, world_size, grad_accum
        self.calls = 0

    def next_batch(self) -> dict[str, Any]:
        import numpy as np
        import torch

        step, micro = divmod(self.calls, self.grad_accum)
        rng = np.random.default_rng([self.seed, step])
        n_global = self.micro_batch * self.world_size * self.grad_accum
        starts = rng.integers(0, len(self.tokens) - self.seq_len, size=n_global)
        lo = (micro * self.world_size + self.rank) * self.micro_batch
        rows = [self.tokens[s: s + self.seq_len] for s in starts[lo: lo + self.micro_batch]]
        ids = torch.from_numpy(np.stack(rows).astype(np.int64))
        self.calls += 1
        return {"input_ids": ids, "labels": ids}

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "world_size": self.world_size}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.calls = int(d["calls"])

    def metrics(self) -> dict[str, Any]:
        return {}


def byte_tokens(path: Path | str, max_bytes: int = 2_000_000) -> Any:
    """UTF-8 bytes of a text file (or of the ``text`` fields of a .jsonl[.gz] file) as token ids 0..255."""
    import gzip

    import numpy as np

    from kamado.jsonl import iter_jsonl

    p = Path(path)

    def lines() -> Iterator[str]:
        if ".jsonl" in p.name:
            yield from (r.get("text", "") + "\n" for r in iter_jsonl(p, skip_bad=True) if isinstance(r, dict))
        else:
            with (gzip.open if p.suffix == ".gz" else open)(p, "rt", encoding="utf-8") as f:
                yield from f

    buf = bytearray()
    for line in lines():
        buf += line.encode("utf-8")
        if len(buf) >= max_bytes:
            break
    return np.frombuffer(bytes(buf[:max_bytes]), dtype=np.uint8).astype(np.int64)


def random_tokens(n: int, vocab: int, seed: int = 0) -> Any:
    import numpy as np

    return np.random.default_rng(seed).integers(0, vocab, size=n)
