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
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test-fast` runs two workers on two cores: one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data root (tests use real data; it must be present, as it is in CI)."""
    from kamado.catalog import data_root as resolve

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


@pytest.fixture(scope="session")
def pack(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> tuple[Path, Path]:
    """(pack folder, tokenizer folder): a 3,000-piece SentencePiece tokenizer and a ja/en pack of ~250k characters
    each, for the pretraining tests."""
    import gzip
    import json

    from kamado.corpus.docs import resolve_inputs
    from kamado.data.config import PackConfig
    from kamado.data.pack import pack as do_pack
    from kamado.tokenizer.config import TokenizerConfig
    from kamado.tokenizer.train import train_tokenizer

    top = tmp_path_factory.mktemp("pretrain_inputs")
    ja, en = top / "ja.jsonl", top / "en.jsonl"
    with gzip.open(data_root / "ja_text" / "jaquad_train_wikipedia_paragraphs.jsonl.gz", "rt", encoding="utf-8") as f, \
            ja.open("w", encoding="utf-8") as out:
        n = 0
        for i, line in enumerate(f):
            text = json.loads(line).get("text", "")
            out.write(json.dumps({"id": f"ja{i}", "text": text, "source": "ja", "lang": "ja"}, ensure_ascii=False) + "\n")
            n += len(text)
            if n > 250_000:
                break
    paras = (data_root / "en_text" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:250_000].split("\n\n")
    en.write_text("".join(json.dumps({"id": f"en{i}", "text": p, "source": "en", "lang": "en"}) + "\n"
                          for i, p in enumerate(paras) if p.strip()), encoding="utf-8")
    specs = resolve_inputs([f"ja={ja}", f"en={en}"])
    tok = top / "tokenizer"
    train_tokenizer(specs, TokenizerConfig(vocab_size=3000, sample_chars=400_000, num_threads=2), tok)
    pk = top / "data"
    do_pack(resolve_inputs([f"ja={ja}", f"en={en}"]), tok, pk, PackConfig(workers=1, valid_fraction=0.05))
    return pk, tok
