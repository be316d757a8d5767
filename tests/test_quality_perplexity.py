"""CCNet-style reference perplexity: a character Kneser-Ney LM trained on real Wikipedia paragraphs scores
held-out Wikipedia lower than scrambled or foreign text, probabilities normalise, and the model and the
pipeline step round-trip."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from kamado.corpus.steps.perplexity import NgramLM, paragraphs


@pytest.fixture(scope="module")
def wiki(data_root: Path) -> tuple[list[str], list[str]]:
    paras: list[str] = []
    with gzip.open(data_root / "ja_text" / "jaquad_train_wikipedia_paragraphs.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            paras += paragraphs(json.loads(line)["text"])
            if len(paras) >= 1700:
                break
    return paras[:1500], paras[1500:1700]


@pytest.fixture(scope="module")
def lm(wiki: tuple[list[str], list[str]]) -> NgramLM:
    return NgramLM.train(wiki[0], order=4)


def test_heldout_wikipedia_beats_scrambled_and_foreign_text(lm: NgramLM, wiki: tuple[list[str], list[str]],
                                                          data_root: Path) -> None:
    held = wiki[1]
    rng = random.Random(0)
    scrambled = ["".join(rng.sample(t, len(t))) for t in held]
    english = [(data_root / "en_text" / "alice_in_wonderland.txt").read_text(encoding="utf-8")[5000:5600]]
    p_held, p_scr, p_en = lm.perplexity(held), lm.perplexity(scrambled), lm.perplexity(english)
    assert np.median(p_held) * 3 < np.median(p_scr)
    assert np.median(p_held) < p_en[0]
    train_ppl = np.median(lm.perplexity(wiki[0][:200]))
    assert train_ppl < np.median(p_held)  # seen text is easier, as it must be


def test_distribution_sums_to_one_over_the_vocabulary(lm: NgramLM, wiki: tuple[list[str], list[str]]) -> None:
    """P(next char | context) summed over every character seen in training, plus the unseen ones, is 1."""
    from kamado.corpus.dedup.minhash import normalize
    from kamado.corpus.steps.perplexity import VOCAB

    seen = sorted({c for t in wiki[0] for c in normalize(t)} - {" "})  # a trailing space is normalised away
    for ctx in ("日本の首都は東", "xyz", ""):
        probs = np.exp(np.array([lm.char_logprobs([ctx + c])[0][-1] for c in seen]))
        unseen = np.exp(lm.char_logprobs([ctx + "\ue000"])[0][-1])
        total = probs.sum() + unseen * (VOCAB - len(seen))
        assert 0.99 < total <= 1.0 + 1e-6, (ctx, total)


def test_save_load_round_trip_and_buckets(lm: NgramLM, wiki: tuple[list[str], list[str]], tmp_path: Path) -> None:
    lm.meta.update({"head_max": 30.0, "middle_max": 60.0})
    lm.save(tmp_path / "lm")
    assert all(p.suffix in (".npy", ".json") for p in (tmp_path / "lm").iterdir())
    again = NgramLM.load(tmp_path / "lm")
    a, b = lm.perplexity(wiki[1][:30]), again.perplexity(wiki[1][:30])
    assert np.allclose(a, b, rtol=1e-4)
    assert again.buckets(np.array([10.0, 45.0, 99.0])).tolist() == ["head", "middle", "tail"]
    assert lm.perplexity([""])[0] == np.inf


def test_perplexity_step_annotates_and_filters(lm: NgramLM, wiki: tuple[list[str], list[str]],
                                               tmp_path: Path) -> None:
    from kamado.corpus.config import ChainConfig
    from kamado.corpus.io.documents import Document
    from kamado.corpus.steps.base import Env
    from kamado.corpus.steps.chain import Pipeline

    lm.meta.update({"head_max": 30.0, "middle_max": 60.0})
    lm.save(tmp_path / "lm")
    pipe = Pipeline(ChainConfig(steps=[{"type": "perplexity", "model": str(tmp_path / "lm"),
                                        "max_bucket": "middle"}]), Env())
    doc, by, _ = pipe.process(Document("w", wiki[1][0], "wiki"))
    assert by is None and doc.meta["ppl_bucket"] in ("head", "middle") and doc.meta["perplexity"] > 1
    rng = random.Random(1)
    junk = "".join(rng.sample(wiki[1][1], len(wiki[1][1])))
    doc, by, reason = pipe.process(Document("j", junk, "web"))
    assert by == "perplexity" and doc.meta["ppl_bucket"] == "tail" and reason.startswith("ppl_bucket:")
