"""Shared fixtures: the real data root, and scratch folders kept inside the project's cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
CACHE.mkdir(exist_ok=True)
for var, sub in (("RAY_TMPDIR", "ray"), ("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("HF_HOME", "hf"),
                 ("WANDB_DIR", "wandb"), ("MPLCONFIGDIR", "mpl")):
    os.environ.setdefault(var, str(CACHE / sub))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("KAMADO_QUIET", "1")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data root (tests use real data; it must be present, as it is in CI)."""
    from kamado.registry import data_root as resolve

    return resolve()


def wiki_paragraphs(data_root: Path, n: int, min_chars: int = 300, unique: bool = True) -> list[str]:
    """The first ``n`` JaQuAD Wikipedia paragraphs of at least ``min_chars`` characters (distinct ones with
    ``unique``), from the data root."""
    import gzip
    import json

    out: list[str] = []
    with gzip.open(data_root / "ja_text" / "jaquad_train_wikipedia_paragraphs.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            out += [p for p in json.loads(line)["text"].split("\n\n") if len(p) >= min_chars]
            if len(dict.fromkeys(out) if unique else out) >= n:
                break
    return list(dict.fromkeys(out))[:n] if unique else out


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: on a shared 2-core box two spinning OpenMP threads are many times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def toy(data_root: Path) -> Path:
    """A small LLaMA + SentencePiece tokenizer built from real data-root text (cached in .cache/)."""
    from _toy import build_toy_model

    return build_toy_model(CACHE / "toy-eval-v1", data_root)


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every registered stage replaced by ``_fake_stages.run`` (runner logic only); returns its call log."""
    import dataclasses

    from kamado import stage as stage_registry

    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_STAGE_LOG", str(log))
    fakes = tuple(dataclasses.replace(s, run="_fake_stages:run") for s in stage_registry.STAGES)
    monkeypatch.setattr(stage_registry, "STAGES", fakes)
    return log
