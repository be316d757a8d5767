"""kamado's task definitions against lm-eval 0.4.13's own, item by item (offline, local task YAMLs).

English tasks follow lm-eval's definitions (HellaSwag with its ``preprocess``); ``prompts: leaderboard`` gives
JCommonsenseQA, JNLI and JSQuAD exactly as lm-eval's ``japanese_leaderboard`` tasks, demonstrations included; MGSM
and XWinograd are the leaderboard's own tasks on the data-root files.
"""

from __future__ import annotations

import pytest

from kamado.catalog import resolve
from kamado.eval.lmeval_backend import compare
from kamado.eval.tasks import build_examples, get_task, hellaswag_ctx_ab, hellaswag_preprocess
from kamado.jsonl import read_jsonl

N = 8
CASES = [("arc-easy", "kamado"), ("arc-challenge", "kamado"), ("hellaswag", "kamado"), ("truthfulqa-mc", "kamado"),
         ("jcommonsenseqa", "leaderboard"), ("jnli", "leaderboard"), ("jsquad", "leaderboard"),
         ("mgsm-ja", "leaderboard"), ("xwinograd-ja", "leaderboard")]


def test_hellaswag_preprocess_is_lm_evals(data_root):
    utils = pytest.importorskip("lm_eval.tasks.hellaswag.utils")
    docs = read_jsonl(resolve("hellaswag", data_root))
    for d in docs:
        a, b = hellaswag_ctx_ab(d)
        assert (a + " " + b).strip() == d["ctx"].strip()
        want = utils.preprocess(d["activity_label"] + ": " + a + " " + b.capitalize())
        assert get_task("hellaswag").query(d) == want == hellaswag_preprocess(want)
        assert get_task("hellaswag").choices(d) == [" " + utils.preprocess(e) for e in d["endings"]]
    raw = {"activity_label": "Home", "ctx_a": "[header] How to clean [title] Use soap.  [step] Rinse.", "ctx_b": "",
           "endings": ["[substeps] dry  it."], "label": 0}
    assert get_task("hellaswag").query(raw) == utils.preprocess("Home: " + raw["ctx_a"] + " ")


def test_leaderboard_prompts_and_demos(data_root):
    ex = build_examples(get_task("jnli", "leaderboard"), data_root, limit=None, seed=0)[0]
    assert ex[0].context.startswith("以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。")
    assert ex[0].context.count("### 応答：") == 4 and ex[0].choices == ["\n含意", "\n矛盾", "\n中立"]
    # a limited run gives each item the demonstrations of the full run (lm-eval's sampler, advanced in order)
    sub = build_examples(get_task("jnli", "leaderboard"), data_root, limit=20, seed=3)[0]
    full = {e.id: e.context for e in ex}
    assert all(full[e.id] == e.context for e in sub)
    assert get_task("jnli").query != get_task("jnli", "leaderboard").query  # kamado's own prompts by default
    js = build_examples(get_task("jsquad", "leaderboard"), data_root, limit=3, seed=0)[0]
    assert all(e.context.count("### 応答：") == 3 and len(e.gold) == 1 for e in js)


@pytest.mark.slow
@pytest.mark.parametrize(("task", "prompts"), CASES)
def test_matches_lm_eval_per_item(task, prompts, toy, data_root, tmp_path, one_thread, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    r = compare(toy, task, prompts, N, root=data_root, work_dir=tmp_path)
    assert len(r["items"]) == N
    bad = [it for it in r["items"] if not it["same"]]
    assert not bad, bad[:2]
    assert r["identical"] and r["max_abs_diff"] < 2e-3
