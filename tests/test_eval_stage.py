"""The eval stage over a run folder (pack + models), the `kamado eval` CLI, and the task table on real data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kamado.config import KamadoError
from kamado.eval.config import EvalConfig
from kamado.eval.tasks import SUITES, TASKS, build_examples, expand
from kamado.stage import StageContext

pytestmark = pytest.mark.usefixtures("one_thread")




def make_pack(dst: Path, toy: Path, data_root: Path) -> dict:
    """A pack folder following the data contract: per-source valid.bin (uint16) + valid.idx.npy + pack.json."""
    from transformers import AutoTokenizer

    from kamado.eval.perplexity import _texts_of

    tok = AutoTokenizer.from_pretrained(toy)
    srcs = {"ja_wiki": ("ja", _texts_of("jsquad-valid", data_root / "jglue/jsquad/valid_first_half.json")[:6]),
            "en_wiki": ("en", _texts_of("wikitext2", data_root / "en_text/wikitext-2/valid_first_half.txt")[:3])}
    meta: dict = {"vocab_size": len(tok), "dtype": "uint16", "eos_id": tok.eos_token_id, "bos_id": tok.bos_token_id,
                  "sources": {}}
    meta["chars"] = {}
    for name, (lang, texts) in srcs.items():
        (dst / name).mkdir(parents=True)
        toks, starts = [], []
        meta["chars"][name] = 0
        for t in texts:
            starts.append(len(toks))
            ids = tok(t, add_special_tokens=False)["input_ids"][:400]
            toks += [tok.bos_token_id, *ids, tok.eos_token_id]
            meta["chars"][name] += len(tok.decode(ids, skip_special_tokens=True))
        np.asarray(toks, dtype=np.uint16).tofile(dst / name / "valid.bin")
        np.save(dst / name / "valid.idx.npy", np.asarray(starts, dtype=np.int64))
        meta["sources"][name] = {"lang": lang, "train_tokens": 0, "valid_tokens": len(toks), "docs": len(texts),
                                 "train": f"{name}/train.bin", "valid": f"{name}/valid.bin"}
    (dst / "pack.json").write_text(json.dumps(meta))
    return meta


def test_stage_evaluates_every_model_of_the_run(toy, data_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(toy, run / "pretrain" / "hf")
    shutil.copytree(toy, run / "tune" / "full" / "hf")  # tune/lora is missing: skipped
    meta = make_pack(run / "data", toy, data_root)
    out = run / "eval"
    out.mkdir()
    ctx = StageContext("eval", out, inputs={"pretrain": run / "pretrain", "tune": run / "tune", "data": run / "data"},
                       data_root=data_root, seed=5, run_dir=run, quiet=True)
    from kamado.eval.stage import run as run_stage

    cfg = EvalConfig(tasks=["perplexity", "jcommonsenseqa", "jsts"], limit=12)
    counts = run_stage(cfg, ctx)
    res = json.loads((out / "results.json").read_text())
    assert set(res["models"]) == {"pretrain", "tune/full"} and res["skipped_models"] == ["tune/lora"]
    for name in ("pretrain", "tune/full"):
        m = res["models"][name]
        ppl = m["perplexity"]
        # the pack's validation documents, decoded: scored on their characters, whatever the tokenizer
        for lang, src in (("ja", "ja_wiki"), ("en", "en_wiki")):
            assert ppl[f"chars@{src}"] == ppl[f"chars_{lang}"] == meta["chars"][src]
            assert ppl[f"docs@{src}"] == meta["sources"][src]["docs"] and ppl[f"tokens@{src}"] > 0
            assert ppl[f"token_ppl_{lang}"] > 1 and ppl[f"char_ppl_{lang}"] > 1 and ppl[f"bpc_{lang}"] > 0
            assert ppl[f"bpc@{src}_ci95"][0] <= ppl[f"bpc@{src}"] <= ppl[f"bpc@{src}_ci95"][1]
        assert m["jcommonsenseqa"]["n"] == 12 and 0 <= m["jcommonsenseqa"]["acc"] <= 1
        assert m["jcommonsenseqa"]["acc_stderr"] >= 0
        assert -1 <= m["jsts"]["pearson"] <= 1
        detail = out / res["details"][name] / "jcommonsenseqa.jsonl"
        rows = [json.loads(x) for x in detail.read_text().splitlines()]
        assert len(rows) == 12 and all(len(r["logliks"]) == 5 for r in rows)
        assert m["jcommonsenseqa"]["acc"] == pytest.approx(sum(r["correct"] for r in rows) / 12)
    # same weights, same numbers
    assert res["models"]["pretrain"]["jcommonsenseqa"]["acc"] == res["models"]["tune/full"]["jcommonsenseqa"]["acc"]
    assert counts["models"] == 2 and "pretrain.jcommonsenseqa.acc" in counts
    assert "tune/full.perplexity.char_ppl_ja" in counts
    # a rerun of an interrupted attempt reuses finished models
    (out / "results.json").unlink()
    part = out / "models" / "pretrain" / "results.json"
    prev = json.loads(part.read_text())
    part.write_text(json.dumps(prev | {"results": {"marker": {"n": 1}}}))
    run_stage(cfg, ctx)
    assert json.loads((out / "results.json").read_text())["models"]["pretrain"] == {"marker": {"n": 1}}
    # ... but not when the model's files changed since
    (out / "results.json").unlink()
    part.write_text(json.dumps(prev | {"results": {"marker": {"n": 1}}, "model": "another model"}))
    run_stage(cfg, ctx)
    assert "marker" not in json.loads((out / "results.json").read_text())["models"]["pretrain"]


def test_stage_without_models_and_bad_config(tmp_path):
    from kamado.eval.stage import run as run_stage

    with pytest.raises(KamadoError, match="none of the models"):
        run_stage(EvalConfig(), StageContext("eval", tmp_path, inputs={"pretrain": tmp_path / "nope"}))
    with pytest.raises(ValueError, match="unknown eval task"):
        EvalConfig(tasks=["jcommonsenseqa", "mmlu"])


def test_cli_eval_writes_results_and_table(toy, tmp_path):
    from typer.testing import CliRunner

    from kamado.cli import app

    out = tmp_path / "ev"
    r = CliRunner().invoke(app, ["eval", str(toy), "--tasks", "arc-easy,hellaswag", "--limit", "6", "--out", str(out),
                                 "--fewshot", "arc-easy=2"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    m = res["models"][toy.name]
    assert m["arc-easy"]["n"] == 6 and m["arc-easy"]["shots"] == 2 and m["hellaswag"]["n"] == 6
    assert (out / res["details"][toy.name] / "hellaswag.jsonl").is_file()
    bad = CliRunner().invoke(app, ["eval", str(toy), "--tasks", "nosuchtask"])
    assert bad.exit_code != 0 and isinstance(bad.exception, KamadoError)


def test_tasks_real_data_prompts_and_sampling(data_root):
    assert expand("quick") == ["perplexity", "jcommonsenseqa"] and expand("jglue,jnli") == SUITES["jglue"]
    for name in expand("all"):
        if name == "perplexity":
            continue
        exs, total = build_examples(TASKS[name], data_root, limit=5, seed=1)
        assert len(exs) == 5 and total >= 150
        for e in exs:
            assert e.context.endswith(e.query)
            if TASKS[name].kind == "mc":
                assert len(e.choices) >= 3 and 0 <= e.gold < len(e.choices)
            if TASKS[name].lang == "ja" and TASKS[name].shots:
                # k demonstrations, never the query itself
                assert e.context.count(e.query.split("\n")[-1]) == TASKS[name].shots + 1
                assert e.context.count(e.query) == 1
    # subsets are deterministic in the seed, and differ between seeds
    ids = lambda s: [e.id for e in build_examples(TASKS["jnli"], data_root, limit=20, seed=s)[0]]  # noqa: E731
    assert ids(3) == ids(3) and ids(3) != ids(4)
    # JNLI labels map onto the three Japanese relation words; JSQuAD keeps every gold answer
    e = build_examples(TASKS["jnli"], data_root, limit=1, seed=0)[0][0]
    assert e.choices == ["含意", "矛盾", "中立"]
    q = build_examples(TASKS["jsquad"], data_root, limit=3, seed=0)[0]
    assert all(isinstance(x.gold, list) and x.gold for x in q)


def test_metrics():
    from kamado.eval import metrics as M

    assert M.char_f1("小笠原諸島", ["小笠原諸島を除く日本", "小笠原諸島"]) == 1.0
    assert M.char_f1("小笠原", ["小笠原諸島"]) == pytest.approx(2 * 1 * 0.6 / 1.6)
    assert M.exact_match(" 小笠原諸島。", ["小笠原諸島"]) == 1.0 and M.exact_match("x", ["y"]) == 0.0
    assert M.mc2([0.0, 0.0, 0.0, 0.0], [0, 1]) == pytest.approx(0.5)
    m, se = M.mean_stderr([1, 0, 1, 1])
    assert m == 0.75 and se == pytest.approx((0.25 / 4) ** 0.5)
    assert M.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert M.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
