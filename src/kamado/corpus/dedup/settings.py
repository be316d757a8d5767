"""What a dedup counts as a duplicate: the one settings model of the recipe (``corpus.dedup``) and of
``kamado corpus dedup`` (whose options, defaults and help are made from these fields).

Output options (shard format, compression level, what ``rejected/`` holds) are not settings of the algorithm:
they are arguments of :func:`kamado.corpus.dedup.run.run_dedup`; in a recipe the format is ``corpus.shard_format``.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from kamado.config import StrictModel

Verify = Literal["exact", "signature", "none"]
VERIFY: tuple[str, ...] = ("exact", "signature", "none")


class DedupSettings(StrictModel):
    """Exact copies, then MinHash-LSH near duplicates of the normalised text."""

    model_config = ConfigDict(frozen=True)

    exact: bool = Field(True, description="Remove exact copies (normalised text).")
    near: bool = Field(True, description="Remove near duplicates (MinHash LSH).")
    threshold: float = Field(0.8, gt=0.0, le=1.0,
                             description="Character n-gram Jaccard similarity that counts as a duplicate.")
    ngram: int = Field(5, ge=1, description="Character n-gram size.")
    num_perm: int = Field(128, ge=8, description="MinHash signature length.")
    bands: int = Field(0, ge=0, description="LSH bands (0: chosen from the threshold).")
    rows: int = Field(0, ge=0, description="Rows per band (0: chosen with the bands).")
    verify: Verify = Field("exact", description="LSH candidate pairs: exact (estimates near the threshold decided by "
                           "the exact n-gram Jaccard of the texts), signature (estimate only) or none.")
    scheme: Literal["oph", "classic"] = Field("oph", description="oph (one-permutation, fast) or classic (num_perm "
                                              "hash functions).")
    seed: int = Field(0, description="Seed of the MinHash hash functions.")
    exact_sigmas: float = Field(2.0, gt=0.0, description="verify exact: estimates within threshold ± this many "
                                "standard errors are checked on the texts.")
    lsh_margin: float = Field(0.2, ge=0.0, lt=1.0, description="Bands and rows are tuned for threshold - margin "
                              "(recall); verification keeps the precision.")
    batch_chars: int = Field(1 << 18, ge=1, description="Characters hashed per vectorized batch.")

    @field_validator("verify", mode="before")
    @classmethod
    def _verify_bool(cls, v: object) -> object:
        return ("exact" if v else "none") if isinstance(v, bool) else v  # older callers: True / False

    def lsh(self):  # -> LshSpec (imported lazily: the recipe loads this model without numpy work)
        """The resolved MinHash/LSH spec (bands and rows filled in)."""
        from kamado.config import KamadoError
        from kamado.corpus.dedup.minhash import LshSpec, lsh_params

        if self.bands and self.rows:
            b, r = self.bands, self.rows
        elif self.bands:
            b, r = self.bands, self.num_perm // self.bands
        else:
            b, r = lsh_params(max(0.05, self.threshold - self.lsh_margin), self.num_perm)
        if b * r > self.num_perm:
            raise KamadoError(f"bands*rows = {b}*{r} exceeds num_perm = {self.num_perm}")
        return LshSpec(self.num_perm, b, r, self.threshold, self.ngram, self.seed, self.scheme)

    def sigma(self) -> float:
        """Standard error of the signature's Jaccard estimate at the threshold."""
        t = self.threshold
        return math.sqrt(t * (1.0 - t) / self.num_perm)

    def verify_cut(self) -> float:
        """``verify="signature"``: smallest fraction of equal signature positions for a candidate pair to count."""
        return max(0.0, self.threshold - 2.0 * self.sigma())
