"""The mixture sampler: determinism, exact resume, ranks, staged shares, epoch cap, validation batches, plan CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kamado.config import KamadoError
from kamado.data.config import MixtureConfig
from kamado.data.loader import MixtureSampler, valid_batches
from kamado.data.mixture import plan, realized

ROOT = Path(__file__).resolve().parents[1]
STAGED = MixtureConfig.model_validate({"stages": [{"start": 0.0, "weights": {"en": 0.6, "ja": 0.4}},
                                                  {"start": 0.3, "weights": {"ja": 0.7, "en": 0.3}}]})


def byte_pack(out: Path, sources: dict[str, tuple[str, list[str]]], eos: int = 0) -> Path:
    """A pack in the documented format, with UTF-8 bytes of real text as token ids (vocab 256)."""
    doc: dict = {"format": 1, "vocab_size": 256, "dtype": "uint16", "eos_id": eos, "bos_id": 1, "sources": {}}
    for name, (lang, texts) in sources.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        info: dict = {"lang": lang, "docs": len(texts)}
        for split, part in (("train", texts[1:]), ("valid", texts[:1])):
            toks, starts = [], []
            for t in part:
                starts.append(sum(len(x) for x in toks))
                toks.append(np.frombuffer(t.encode(), dtype=np.uint8).astype(np.uint16))
                toks.append(np.asarray([eos], dtype=np.uint16))
            arr = np.concatenate(toks) if toks else np.zeros(0, dtype=np.uint16)
            arr.tofile(out / name / f"{split}.bin")
            np.save(out / name / f"{split}.idx.npy", np.asarray(starts, dtype=np.int64))
            info |= {f"{split}_tokens": len(arr), split: f"{name}/{split}.bin", f"{split}_idx": f"{name}/{split}.idx.npy",
                     f"{split}_docs": len(part)}
        doc["sources"][name] = info
    (out / "pack.json").write_text(json.dumps(doc))
    return out


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    ja = [json.loads(x)["text"] for x in (data_root / "ja_web_noisy/fineweb2_edu_ja_docs.jsonl").open()]
    en = [p for p in (data_root / "en_text/alice_in_wonderland.txt").read_text(encoding="utf-8").split("\n\n") if p.strip()]
    small = (data_root / "ja_web_noisy/uzushio_crawled_page_kakaku.txt").read_text(encoding="utf-8").split("\n")
    return byte_pack(tmp_path_factory.mktemp("bpack"), {"ja": ("ja", ja), "en": ("en", en),
                                                         "kakaku": ("ja", small[:40])})


def _run(s: MixtureSampler, steps: range, accum: int = 1) -> list[torch.Tensor]:
    out = []
    for step in steps:
        s.set_step(step)
        for _ in range(accum):
            b = s.next_batch()
            assert torch.equal(b["input_ids"], b["labels"]) and b["input_ids"].dtype == torch.long
            out.append(b["input_ids"])
    return out


def test_deterministic_from_seed(pack_dir: Path) -> None:
    mk = lambda seed: MixtureSampler(pack_dir, STAGED, seq_len=64, micro_batch=4, total_steps=20, seed=seed)  # noqa: E731
    a, b, c = _run(mk(1), range(20)), _run(mk(1), range(20)), _run(mk(2), range(20))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert a[0].shape == (4, 64) and int(a[0].max()) < 256


@pytest.mark.parametrize("accum", [1, 3])
def test_resume_continues_on_exactly_the_next_batch(pack_dir: Path, accum: int) -> None:
    kw = dict(seq_len=32, micro_batch=2, total_steps=40, seed=5, grad_accum=accum)
    full = MixtureSampler(pack_dir, STAGED, **kw)
    ref = _run(full, range(40), accum)
    s = MixtureSampler(pack_dir, STAGED, **kw)
    _run(s, range(17), accum)
    state = json.loads(json.dumps(s.state_dict()))
    assert len(json.dumps(state)) < 2000
    again = MixtureSampler(pack_dir, STAGED, **kw)
    again.load_state_dict(state)
    rest = _run(again, range(17, 40), accum)
    assert all(torch.equal(x, y) for x, y in zip(ref[17 * accum:], rest, strict=True))
    assert again.metrics() == full.metrics()
    if accum > 1:  # a state saved between the micro-batches of one step continues mid-step
        m = MixtureSampler(pack_dir, STAGED, **kw)
        _run(m, range(5), accum)
        m.set_step(5)
        m.next_batch()
        mid = json.loads(json.dumps(m.state_dict()))
        r = MixtureSampler(pack_dir, STAGED, **kw)
        r.load_state_dict(mid)
        assert torch.equal(r.next_batch()["input_ids"], ref[5 * accum + 1])


def test_ranks_split_the_global_batch_and_world_size_change_is_an_error(pack_dir: Path) -> None:
    one = _run(MixtureSampler(pack_dir, STAGED, seq_len=32, micro_batch=4, total_steps=10, seed=3), range(10))
    r0 = MixtureSampler(pack_dir, STAGED, seq_len=32, micro_batch=2, total_steps=10, seed=3, rank=0, world_size=2)
    r1 = MixtureSampler(pack_dir, STAGED, seq_len=32, micro_batch=2, total_steps=10, seed=3, rank=1, world_size=2)
    b0, b1 = _run(r0, range(10)), _run(r1, range(10))
    for g, x, y in zip(one, b0, b1, strict=True):
        assert torch.equal(torch.cat([x, y]), g)
    assert r0.state_dict() == r1.state_dict() | {} and r0.metrics() == r1.metrics()
    solo = MixtureSampler(pack_dir, STAGED, seq_len=32, micro_batch=4, total_steps=10, seed=3)
    with pytest.raises(KamadoError, match="saved with 2 data-parallel ranks, now 1"):
        solo.load_state_dict(r0.state_dict())
    with pytest.raises(KamadoError, match="seq_len=32, this run 64"):
        MixtureSampler(pack_dir, STAGED, seq_len=64, micro_batch=2, total_steps=10, seed=3, rank=0,
                       world_size=2).load_state_dict(r0.state_dict())


def test_staged_shares_match_the_plan_within_one_point(pack_dir: Path) -> None:
    s = MixtureSampler(pack_dir, STAGED, seq_len=64, micro_batch=8, total_steps=100, seed=11)
    records = []
    for step in range(100):
        s.set_step(step)
        s.next_batch()
        records.append({"step": step + 1, **s.metrics()})
    by_stage = realized(records)
    assert set(by_stage) == {0, 1}
    assert records[29]["mix_stage"] == 0 and records[30]["mix_stage"] == 1
    for k, want in ((0, 0.4), (1, 0.7)):
        st = by_stage[k]
        ja = (st["ja"] + st["kakaku"]) / sum(st.values())
        assert abs(ja - want) <= 0.01
        last = records[29 if k == 0 else 99]
        assert abs(last["mix_stage_lang/ja"] - want) <= 0.01
    doc = json.loads((pack_dir / "pack.json").read_text())
    rows, warns = plan(doc["sources"], STAGED, 100, 8, 64)
    for r in rows:
        assert abs(r.tokens - by_stage[r.stage][r.source]) <= 64, r
    assert not warns
    _, warns = plan(doc["sources"], MixtureConfig(weights={"kakaku": 0.5, "en": 0.5}), 100, 8, 64)
    assert len(warns) == 1 and "'kakaku' would be repeated" in warns[0]


def test_epoch_cap_drops_a_small_source(pack_dir: Path) -> None:
    mix = MixtureConfig(weights={"kakaku": 0.5, "en": 0.5}, max_epochs=1.0)
    s = MixtureSampler(pack_dir, mix, seq_len=64, micro_batch=8, total_steps=50, seed=0)
    cap = s.cap["kakaku"]
    with pytest.warns(UserWarning, match="kakaku.*reached max_epochs=1"):
        _run(s, range(50))
    m = s.metrics()
    assert m["mix_tokens/kakaku"] == cap * 64 and m["mix_epochs/kakaku"] <= 1.0
    assert m["mix_tokens/en"] == 50 * 8 * 64 - cap * 64
    alone = MixtureSampler(pack_dir, MixtureConfig(weights={"kakaku": 1.0}, max_epochs=1.0), seq_len=64,
                           micro_batch=8, total_steps=50, seed=0)
    with pytest.raises(KamadoError, match="every source of mixture stage 0 has reached max_epochs"), \
            pytest.warns(UserWarning):
        _run(alone, range(50))
    with pytest.raises(KamadoError, match="neither a source nor a language"):
        MixtureSampler(pack_dir, MixtureConfig(weights={"fr": 1.0}), seq_len=64, micro_batch=8, total_steps=5, seed=0)


def test_valid_batches(pack_dir: Path) -> None:
    vb = valid_batches(pack_dir, seq_len=16, batch_size=4, max_batches=3)
    assert len(vb) == 3 and vb[0]["input_ids"].shape == (4, 16)
    assert valid_batches(pack_dir, seq_len=16, batch_size=4, max_batches=3)[1]["input_ids"].equal(vb[1]["input_ids"])
    one = valid_batches(pack_dir, seq_len=100_000, batch_size=2, max_batches=2, source="en")
    lab = one[0]["labels"]
    n = json.loads((pack_dir / "pack.json").read_text())["sources"]["en"]["valid_tokens"]
    assert one[0]["input_ids"].shape == (1, 100_000) and int((lab != -100).sum()) == n
    with pytest.raises(KamadoError, match="no source 'xx'"):
        valid_batches(pack_dir, 16, 2, 2, source="xx")


def test_mixture_cli_plans_and_reports_realized(pack_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "pretrain").mkdir(parents=True)
    os.symlink(pack_dir, run / "data")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\npretrain:\n  train: {steps: 100, batch_size: 8, seq_len: 64}\n  mixture:\n"
                      "    stages:\n      - {start: 0.0, weights: {en: 0.6, ja: 0.4}}\n"
                      "      - {start: 0.3, weights: {ja: 0.7, en: 0.3}}\n    max_epochs: 0.1\n")
    s = MixtureSampler(pack_dir, STAGED, seq_len=64, micro_batch=8, total_steps=100, seed=11)
    with open(run / "pretrain" / "metrics.jsonl", "w") as f:
        for step in range(100):
            s.set_step(step)
            s.next_batch()
            f.write(json.dumps({"step": step + 1, "loss": 1.0, **s.metrics()}) + "\n")
    env = os.environ | {"KAMADO_QUIET": "1", "COLUMNS": "220"}
    r = subprocess.run([sys.executable, "-m", "kamado.cli", "data", "mixture", "--recipe", str(recipe), "--run",
                        str(run)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "real tokens" in r.stderr and "0-30" in r.stderr and "30-100" in r.stderr
    assert "warning:" in r.stderr and "source 'en' would be repeated" in r.stderr
    r = subprocess.run([sys.executable, "-m", "kamado.cli", "data", "mixture", "--recipe", str(recipe)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "no pack given" in r.stderr
