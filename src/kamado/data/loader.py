"""A deterministic, resumable, rank-aware sampler of fixed-length windows from a ja/en token mixture.

Every optimizer step draws one *global batch* of ``micro_batch × world_size × grad_accum`` windows.
Each rank computes the same global assignment (which source, which window) — a few integer
operations per window — and reads only its own rows, so all ranks share one small state:

- sources are picked per window by *smallest deficit* against the stage's token shares, so the
  realized share of each stage is exact to one window (not just in expectation);
- a source's windows are visited in a fresh random order each epoch (seeded by seed, source, epoch;
  with a random offset so epochs see different cuts); a source that reaches ``max_epochs`` is
  dropped and its share goes to the others;
- the global batch is shuffled (seeded by step) before it is split across ranks and micro-batches.

``state_dict()`` holds counters only (JSON-able, a few hundred bytes); loading it continues with
exactly the batch that would have come next.
"""

from __future__ import annotations

import math
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from kamado.config import KamadoError
from kamado.data.config import MixtureConfig
from kamado.data.mixture import stage_at, stage_starts, stage_weights
from kamado.data.pack import check_pack, open_tokens

STATE_VERSION = 1
_PERM_MAX = 1 << 22  # sources with more windows use an affine bijection (no stored permutation)


class MixtureSampler:
    """Windows of ``seq_len`` tokens from a pack, mixed by token shares, optionally in stages."""

    def __init__(self, pack_dir: Path | str, mixture: MixtureConfig | None, seq_len: int, micro_batch: int,
                 total_steps: int, seed: int, rank: int = 0, world_size: int = 1, grad_accum: int = 1,
                 verify: bool = True) -> None:
        if seq_len < 1 or micro_batch < 1 or world_size < 1 or grad_accum < 1:
            raise KamadoError(f"sampler: seq_len {seq_len}, micro_batch {micro_batch}, world_size {world_size} "
                              f"and grad_accum {grad_accum} must all be ≥ 1")
        if not 0 <= rank < world_size:
            raise KamadoError(f"sampler: rank {rank} outside world size {world_size}")
        self.pack_dir = Path(pack_dir)
        self.doc = check_pack(self.pack_dir, verify_digests=verify)
        self.mix = mixture or MixtureConfig()
        self.seq_len, self.micro, self.total_steps = seq_len, micro_batch, max(1, total_steps)
        self.seed, self.rank, self.world, self.accum = int(seed), rank, world_size, grad_accum
        self.global_batch = micro_batch * world_size * grad_accum
        src = self.doc["sources"]
        self.sources = [s for s in sorted(src) if src[s]["train_tokens"] > 0]
        if not self.sources:
            raise KamadoError(f"{self.pack_dir}: the pack holds no training tokens")
        self.langs = {s: src[s]["lang"] for s in self.sources}
        self.ntok = {s: int(src[s]["train_tokens"]) for s in self.sources}
        self.nwin = {s: max(1, self.ntok[s] // seq_len) for s in self.sources}
        self.cap = {s: max(1, math.floor(self.mix.max_epochs * self.ntok[s] / seq_len)) for s in self.sources}
        empty = {s: str(v.get("lang")) for s, v in src.items() if s not in self.ntok} | {
            s: str(lg) for s, lg in (self.doc.get("empty_sources") or {}).items()}
        self.weights = [w for _, w in stage_weights(self.mix, self.ntok, self.langs, empty)]
        self.starts = stage_starts(self.mix, self.total_steps)
        self._mm: dict[str, np.ndarray] = {}
        self._perm: dict[str, tuple[int, np.ndarray, int]] = {}
        self._warned: set[str] = set()
        # state
        self._step = 0  # optimizer step of the next global batch
        self._accum_pos = 0  # micro-batches of the current global batch already handed out
        self._counts = dict.fromkeys(self.sources, 0)  # windows drawn per source (whole run)
        self._stage = -1
        self._stage_counts = dict.fromkeys(self.sources, 0)  # windows per source in the current stage
        self._capped: list[str] = []
        self._snap: dict[str, Any] | None = None  # state before the current global batch
        self._cur: list[tuple[str, int]] = []  # the current global batch: (source, window index)

    # ------------------------------------------------------------------ assignment

    def _snapshot(self) -> dict[str, Any]:
        return {"step": self._step, "counts": dict(self._counts), "stage": self._stage,
                "stage_counts": dict(self._stage_counts), "capped": list(self._capped)}

    def _restore(self, s: dict[str, Any]) -> None:
        self._step = int(s["step"])
        self._counts = {k: int(s["counts"].get(k, 0)) for k in self.sources}
        self._stage = int(s["stage"])
        self._stage_counts = {k: int(s["stage_counts"].get(k, 0)) for k in self.sources}
        self._capped = [k for k in s.get("capped", []) if k in self.sources]

    def _assign(self) -> None:
        """Draw the global batch of step ``self._step`` (updates the counters)."""
        self._snap = self._snapshot()
        k = stage_at(self.starts, self._step)
        if k != self._stage:
            self._stage = k
            self._stage_counts = dict.fromkeys(self.sources, 0)
        w = self.weights[k]
        n = sum(self._stage_counts.values())
        slots: list[tuple[str, int]] = []
        for _ in range(self.global_batch):
            live = {s: w.get(s, 0.0) for s in self.sources if s not in self._capped and w.get(s, 0.0) > 0}
            if not live:
                raise KamadoError(f"step {self._step + 1}: every source of mixture stage {k} has reached "
                                  f"max_epochs={self.mix.max_epochs:g}; raise the cap, lower the steps or add data "
                                  "(`kamado data mixture --recipe ...` shows the plan)")
            tot = sum(live.values())
            best = max(live, key=lambda s: (live[s] / tot * (n + 1) - self._stage_counts[s], -self.sources.index(s)))
            slots.append((best, self._counts[best]))
            self._counts[best] += 1
            self._stage_counts[best] += 1
            n += 1
            if self._counts[best] >= self.cap[best]:
                self._capped.append(best)
                if best not in self._warned:
                    self._warned.add(best)
                    warnings.warn(f"mixture: source {best!r} reached max_epochs={self.mix.max_epochs:g} at step "
                                  f"{self._step + 1}; its share goes to the other sources", stacklevel=2)
        order = np.random.default_rng([self.seed, 0x6D6978, self._step]).permutation(len(slots))
        self._cur = [slots[i] for i in order]
        self._step += 1

    # ------------------------------------------------------------------ tokens

    def _tokens(self, source: str) -> np.ndarray:
        mm = self._mm.get(source)
        if mm is None:
            mm = self._mm[source] = open_tokens(self.pack_dir, self.doc, source, "train")
        return mm

    def _window(self, source: str, k: int) -> np.ndarray:
        nw, n, T = self.nwin[source], self.ntok[source], self.seq_len
        epoch, pos = divmod(k, nw)
        cached = self._perm.get(source)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, zlib.crc32(source.encode()), epoch])
            if nw <= _PERM_MAX:
                order: Any = rng.permutation(nw)
            else:  # huge source: an affine bijection pos -> (a*pos + b) mod nw instead of a stored permutation
                a = int(rng.integers(1, nw))
                while math.gcd(a, nw) != 1:
                    a += 1
                order = (a, int(rng.integers(0, nw)))
            cached = (epoch, order, int(rng.integers(0, n)) if epoch > 0 else 0)
            self._perm[source] = cached
        order = cached[1]
        w = int(order[pos]) if isinstance(order, np.ndarray) else (order[0] * pos + order[1]) % nw
        start = (cached[2] + w * T) % n
        toks = self._tokens(source)
        if start + T <= n:
            return np.asarray(toks[start:start + T], dtype=np.int64)
        idx = (start + np.arange(T)) % n  # wraps around the end of the source (or a source shorter than T)
        return np.asarray(toks[idx], dtype=np.int64)

    # ------------------------------------------------------------------ API

    def set_step(self, step: int) -> None:
        """The optimizer step about to be trained (0-based); decides the mixture stage of the next batch."""
        if self._accum_pos == 0:
            self._step = int(step)

    def next_batch(self) -> dict[str, Any]:
        """This rank's next micro-batch: ``{"input_ids", "labels"}``, LongTensor ``[micro_batch, seq_len]``."""
        import torch

        if self._accum_pos == 0:
            self._assign()
        a = self._accum_pos
        lo = (a * self.world + self.rank) * self.micro
        rows = [self._window(s, k) for s, k in self._cur[lo:lo + self.micro]]
        self._accum_pos = (a + 1) % self.accum
        ids = torch.from_numpy(np.stack(rows))
        return {"input_ids": ids, "labels": ids.clone()}

    def state_dict(self) -> dict[str, Any]:
        """Small JSON-able position: counters as of the current global batch, plus the micro-batch within it."""
        base = self._snap if (self._accum_pos and self._snap is not None) else self._snapshot()
        return {"version": STATE_VERSION, **base, "accum_pos": self._accum_pos, "world_size": self.world,
                "micro_batch": self.micro, "grad_accum": self.accum, "seq_len": self.seq_len, "seed": self.seed,
                "sources": {s: self.ntok[s] for s in self.sources}}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Continue from a saved position (KamadoError when the world size, batch shape or pack differ)."""
        if int(d.get("world_size", self.world)) != self.world:
            raise KamadoError(f"sampler state was saved with {d.get('world_size')} data-parallel ranks, now "
                              f"{self.world}: the mixture cannot continue on the same batches; resume with the same "
                              "number of ranks (or start a fresh run)")
        for key, mine in (("micro_batch", self.micro), ("grad_accum", self.accum), ("seq_len", self.seq_len),
                          ("seed", self.seed)):
            if key in d and int(d[key]) != mine:
                raise KamadoError(f"sampler state has {key}={d[key]}, this run {mine}: cannot resume the same batches")
        saved = d.get("sources")
        if saved is not None and {k: int(v) for k, v in saved.items()} != {s: self.ntok[s] for s in self.sources}:
            raise KamadoError("sampler state belongs to a different pack (sources or token counts differ); "
                              "resume on the pack it was saved with")
        self._restore(d)
        self._accum_pos = 0
        self._warned = set(self._capped)
        pos = int(d.get("accum_pos", 0))
        if pos:
            self._assign()  # rebuild the interrupted global batch from the counters before it
            self._accum_pos = pos

    def metrics(self) -> dict[str, Any]:
        """Realized token shares per source (cumulative and in the current stage), tokens and epochs drawn."""
        T = self.seq_len
        tot = sum(self._counts.values()) or 1
        stot = sum(self._stage_counts.values()) or 1
        m: dict[str, Any] = {"mix_stage": max(self._stage, 0)}
        for s in self.sources:
            m[f"mix/{s}"] = round(self._counts[s] / tot, 5)
            m[f"mix_stage/{s}"] = round(self._stage_counts[s] / stot, 5)
            m[f"mix_tokens/{s}"] = self._counts[s] * T
            m[f"mix_stage_tokens/{s}"] = self._stage_counts[s] * T
            m[f"mix_epochs/{s}"] = round(self._counts[s] * T / self.ntok[s], 4)
        langs = sorted(set(self.langs.values()))
        if sorted(self.sources) != langs:  # also per language when sources are not just languages
            for lg in langs:
                members = [s for s in self.sources if self.langs[s] == lg]
                m[f"mix_lang/{lg}"] = round(sum(self._counts[s] for s in members) / tot, 5)
                m[f"mix_stage_lang/{lg}"] = round(sum(self._stage_counts[s] for s in members) / stot, 5)
        return m


def valid_batches(pack_dir: Path | str, seq_len: int, batch_size: int, max_batches: int,
                  source: str | None = None, verify: bool = False) -> list[dict[str, Any]]:
    """Fixed validation batches from the held-out documents, sources interleaved row by row.

    Windows are consecutive ``seq_len`` slices of each source's ``valid.bin``; the last partial slice is
    padded with EOS and masked (labels -100). ``source`` restricts to one source.
    """
    import torch

    doc = check_pack(Path(pack_dir), verify_digests=verify)
    names = [source] if source else sorted(doc["sources"])
    if source and source not in doc["sources"]:
        raise KamadoError(f"{pack_dir}: no source {source!r} (sources: {', '.join(sorted(doc['sources']))})")
    pad = int(doc.get("eos_id") or 0)
    per: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    need = batch_size * max_batches
    for s in names:
        toks = open_tokens(Path(pack_dir), doc, s, "valid")
        rows = []
        for a in range(0, len(toks) - 1, seq_len):
            w = np.asarray(toks[a:a + seq_len], dtype=np.int64)
            lab = w.copy()
            if len(w) < seq_len:
                lab = np.concatenate([lab, np.full(seq_len - len(w), -100, dtype=np.int64)])
                w = np.concatenate([w, np.full(seq_len - len(w), pad, dtype=np.int64)])
            rows.append((w, lab))
            if len(rows) >= need:
                break
        if rows:
            per[s] = rows
    inter: list[tuple[np.ndarray, np.ndarray]] = []
    i = 0
    while len(inter) < need and any(i < len(r) for r in per.values()):
        inter += [r[i] for r in per.values() if i < len(r)]
        i += 1
    inter = inter[:need]
    out = []
    for b in range(0, len(inter) - batch_size + 1, batch_size):
        chunk = inter[b:b + batch_size]
        out.append({"input_ids": torch.from_numpy(np.stack([c[0] for c in chunk])),
                    "labels": torch.from_numpy(np.stack([c[1] for c in chunk]))})
    if not out and inter:  # fewer rows than one batch: one short batch
        out.append({"input_ids": torch.from_numpy(np.stack([c[0] for c in inter])),
                    "labels": torch.from_numpy(np.stack([c[1] for c in inter]))})
    return out
