"""Japanese leaderboard tasks on the data-root files: AI王 closed-book QA (the organisers' normalisation), MGSM and
XWinograd as lm-eval 0.4.13 defines them, the ``ja-leaderboard`` suite, and a whole ``kamado eval`` run on a toy."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from kamado.catalog import resolve
from kamado.eval import metrics as M
from kamado.eval.tasks import SUITES, _aio_load, _mgsm_load, _xwinograd_load, build_examples, expand, get_task

pytestmark = pytest.mark.usefixtures("one_thread")


def _organisers_normalize(data_root: Path):
    spec = importlib.util.spec_from_file_location("aio_normalize", resolve("aio-normalize", data_root))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.normalize_answer


def test_aio_normalisation_is_the_organisers(data_root):
    theirs = _organisers_normalize(data_root)
    docs = _aio_load(resolve("aio", data_root)) + _aio_load(resolve("aio-pool", data_root))
    assert len(docs) == 500 + 995
    texts = [d["answer"] for d in docs] + [d["question"] for d in docs]
    # the rules' corner cases: brackets only, annotations, commas and slashes, quotes, full-width and tildes
    texts += ["【注】", "(笑)", "[1]", "東京※諸説あり", "「A」、B", "A、B/C", "『吾輩は猫である』シリーズ", "１２３ｋｍ",
              "ABC～DEF", "  a \t b  ", "(注) 答え", "ジェット団\n\n次の問題", "「」"]
    changed = 0
    for t in texts:
        assert M.normalize_answer_aio(t) == theirs(t), t
        changed += M.normalize_answer_aio(t) != t
    assert changed > 50  # the rules do apply to real answers
    assert M.normalize_answer_aio("") == "" and M.normalize_answer_aio(" ※注") == ""  # the original raises here
    s = M.aio_scores("「ジェット団」", ["ジェット団"])
    assert s["exact_match"] == 1.0 and s["char_f1"] == 1.0
    s = M.aio_scores("ジェット", ["ジェット団"])
    assert s["exact_match"] == 0.0 and s["char_f1"] == pytest.approx(2 * 1 * 0.8 / 1.8)


def test_aio_prompts_and_demonstrations(data_root):
    ex, n = build_examples(get_task("aio"), data_root, limit=None, seed=7)
    assert n == 500 and len(ex) == 500 and ex[0].id == "AIO02-0001" and ex[0].gold == ["ジェット団"]
    pool = {d["question"] for d in _aio_load(resolve("aio-pool", data_root))}
    first = ex[0].context
    assert first.startswith("次のクイズの答えを") and first.endswith(ex[0].query) and first.count("問題：") == 5
    demos = [b.split("\n答え：")[0] for b in first.split("問題：")[1:-1]]
    assert all(q in pool for q in demos)  # demonstrations come from the AI王 1 pool, never the evaluated set
    again = build_examples(get_task("aio"), data_root, limit=20, seed=7)[0]
    assert all(e.context == {x.id: x for x in ex}[e.id].context for e in again)  # the seed fixes them
    assert build_examples(get_task("aio"), data_root, limit=None, seed=8)[0][0].context != first
    lb = build_examples(get_task("aio", "leaderboard"), data_root, limit=3, seed=7)[0]
    assert all(e.context.startswith("以下は、タスクを説明する指示と") and e.context.count("### 応答：") == 2 for e in lb)
    assert get_task("aio", "leaderboard").stop == ("\n\n",) and get_task("aio").stop == ("\n",)


def test_mgsm_extraction_is_lm_evals(data_root):
    lm = pytest.importorskip("lm_eval.tasks.japanese_leaderboard.ja_leaderboard_mgsm")
    ex = _mgsm_load(resolve("mgsm-ja-exemplars", data_root))
    probs = _mgsm_load(resolve("mgsm-ja", data_root))
    assert len(ex) == 8 and len(probs) == 125 and all(d["question"].startswith("問題：") for d in ex)
    texts = [d["answer"] for d in ex] + [d["question"] for d in probs]
    texts += ["答えは1,234です。", "答えは-5.", "3.5ドル", "...", "-", "1.2.3", "12,", "答えは 18 です\n\n", "", "x",
              "合計は100.0です", "0.", "-0", "1e5", "１２"]
    for t in texts:
        assert M.mgsm_extract(t) == lm._extract_answer(t), t
        for gold in (18, 1234, -5, 100, 0):
            assert M.mgsm_scores(t, gold)["acc"] == float(lm.process_results({"answer_number": gold}, [t])["acc"])


def test_mgsm_and_xwinograd_prompts(data_root):
    ex = build_examples(get_task("mgsm-ja"), data_root, limit=None, seed=0)[0]
    assert len(ex) == 125 and ex[0].gold == 18 and get_task("mgsm-ja").max_new_tokens == 256
    c = ex[0].context
    assert c.count("### 応答：") == 6 and "問題：" not in c and "ステップごとの答え：" not in c
    assert c.endswith("### 入力：\n" + _mgsm_load(resolve("mgsm-ja", data_root))[0]["question"] + "\n\n### 応答：")
    assert get_task("mgsm-ja", "leaderboard") is get_task("mgsm-ja")  # only the leaderboard's form exists
    docs = _xwinograd_load(resolve("xwinograd-ja", data_root))
    assert len(docs) == 480
    d = docs[0]
    assert d["sentence1"] == "狙撃兵はテロリストを撃った。狙撃兵は悪漢だったからだ。" and d["answer"] == "2"
    assert all(x["sentence1"] != x["sentence2"] and x["answer"] in ("1", "2") for x in docs)
    xw = build_examples(get_task("xwinograd-ja"), data_root, limit=None, seed=0)[0]
    assert xw[0].context == "" and xw[0].choices == [d["sentence1"], d["sentence2"]] and xw[0].gold == 1


def test_ja_leaderboard_suite():
    assert SUITES["jglue"] == ["jcommonsenseqa", "jnli", "jsts", "jsquad"]
    assert expand("ja-leaderboard") == ["jcommonsenseqa", "jnli", "jsquad", "aio", "mgsm-ja", "xwinograd-ja"]
    assert expand("mgsm,xwinograd") == ["mgsm-ja", "xwinograd-ja"]


@pytest.mark.slow
def test_cli_eval_new_tasks(toy, tmp_path):
    from typer.testing import CliRunner

    from kamado.cli import app

    out = tmp_path / "ev"
    r = CliRunner().invoke(app, ["eval", str(toy), "--tasks", "aio,mgsm-ja,xwinograd-ja", "--limit", "6",
                                 "--out", str(out), "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())["models"]
    m = next(iter(res.values()))
    assert m["aio"]["n"] == 6 and {"exact_match", "char_f1"} <= set(m["aio"])
    assert m["mgsm-ja"]["n"] == 6 and "acc" in m["mgsm-ja"] and "acc_norm" not in m["xwinograd-ja"]
    assert m["xwinograd-ja"]["n_total"] == 480 and m["mgsm-ja"]["shots"] == 5
    det = [json.loads(x) for x in next(out.glob("details/*/mgsm-ja.jsonl")).read_text().splitlines()]
    assert len(det) == 6 and all({"pred", "gold", "acc", "extracted"} <= set(d) for d in det)
    det = [json.loads(x) for x in next(out.glob("details/*/aio.jsonl")).read_text().splitlines()]
    assert all({"pred", "pred_norm", "exact_match", "char_f1"} <= set(d) for d in det)
