"""The corpus stage of `kamado run`: per-source cleaning, max_docs, dedup, sources.json."""

from __future__ import annotations

import json
import random
from pathlib import Path

from kamado.corpus.config import CorpusConfig
from kamado.corpus.io.readers import read_documents, read_shard, shard_files
from kamado.corpus.stage import run
from kamado.stage import StageContext

WORDS = "river stone cloud paper lamp window garden letter train music".split()


def test_corpus_stage(tmp_path: Path, data_root: Path) -> None:
    cfg = CorpusConfig.model_validate({
        "sources": [
            {"name": "ja_web", "lang": "ja", "inputs": ["mc4-ja-labeled", "fineweb2-ja"], "max_docs": 500},
            {"name": "en", "lang": "en", "inputs": ["alice", "gutenberg-frankenstein"]},
        ],
        "chain": "default", "dedup": True, "workers": 2,
    })
    out = tmp_path / "corpus"
    out.mkdir()
    ctx = StageContext(name="corpus", out=out, data_root=data_root, quiet=True)
    counts = run(cfg, ctx)
    assert counts["ja_web.input"] == 500  # max_docs: all from the first file (1266 records)
    assert counts["ja_web.chain"] == "default-ja" and counts["en.chain"] == "default-en"
    for name in ("ja_web", "en"):
        assert counts[f"{name}.input"] == counts[f"{name}.kept"] + counts[f"{name}.rejected"] + counts[f"{name}.errors"]
        assert counts[f"{name}.final_docs"] == counts[f"{name}.kept"] - counts[f"{name}.dedup_removed"]
    assert counts["input"] == counts["ja_web.input"] + counts["en.input"]
    listing = json.loads((out / "sources.json").read_text())
    assert [(s["name"], s["lang"]) for s in listing] == [("ja_web", "ja"), ("en", "en")]
    for s in listing:
        kept = Path(s["kept"])
        assert not kept.is_absolute()
        files = shard_files(out / kept)  # the stage's own shards are zstd JSON lines (corpus.shard_format)
        assert files and all(f.name.endswith(".jsonl.zst") for f in files)
        docs = list(read_documents(files))
        assert [d.id for f in files for d in read_shard(f)] == [d["id"] for d in docs]  # what pack/tokenizer read
        assert len(docs) == counts[f"{s['name']}.final_docs"] > 0
        assert set(docs[0]) >= {"id", "text", "source", "lang", "meta"}
        assert {d["lang"] for d in docs} == {s["lang"]}
    # a second call on the finished folder reuses the work and reports the same counts
    again = run(cfg, ctx)
    assert {k: v for k, v in again.items() if not k.endswith("seconds")} == \
        {k: v for k, v in counts.items() if not k.endswith("seconds")}


def test_source_dedup_overrides_corpus(tmp_path: Path, data_root: Path) -> None:
    """A source's own ``dedup`` wins over corpus.dedup: a file holding each document twice, read once
    deduplicated and once as read."""
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) + str(rng.randrange(1000)) for _ in range(80)) for _ in range(6)]
    f = tmp_path / "twice.jsonl"
    f.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts + texts), encoding="utf-8")
    src = {"lang": "en", "inputs": [str(f)]}
    cfg = CorpusConfig.model_validate({
        "sources": [{"name": "deduped", **src}, {"name": "as_read", **src, "dedup": False}],
        "chain": "recipes/experiments/chains/passthrough.yaml", "dedup": True, "workers": 1,
    })
    out = tmp_path / "corpus"
    out.mkdir()
    repo = Path(__file__).resolve().parents[1]
    counts = run(cfg, StageContext(name="corpus", out=out, data_root=data_root, quiet=True, recipe_dir=repo))
    listing = {s["name"]: s["kept"] for s in json.loads((out / "sources.json").read_text())}
    assert listing == {"deduped": "deduped/dedup/kept", "as_read": "as_read/clean/kept"}
    n = counts["as_read.input"]
    assert counts["as_read.final_docs"] == n and counts["as_read.dedup_removed"] == 0
    assert n == 12 and counts["deduped.input"] == n and counts["deduped.dedup_removed"] == 6  # the second copies
    assert counts["deduped.final_docs"] == n - counts["deduped.dedup_removed"]
