"""``kamado eval --backend lm-eval``: the same tasks run by lm-evaluation-harness 0.4.13.

lm-eval runs offline here on task YAMLs written on the fly (:func:`write_tasks`), whose ``dataset_path: json``
points at the data-root files (or at JSON Lines converted from them where the layout differs: TruthfulQA's
``mc_task.json``, JSQuAD's SQuAD-style JSON). The YAMLs copy lm-eval's own task definitions: ARC, HellaSwag
(``process_docs`` is lm-eval's own function), TruthfulQA MC1/MC2 and, for ``prompts: leaderboard``, the
``japanese_leaderboard`` JCommonsenseQA, JNLI, JSQuAD, MGSM and XWinograd tasks (their ``process_docs`` /
``process_results`` too; MGSM's and XWinograd's data-root files are converted to the Hub's columns). ``prompts: kamado``
runs kamado's Japanese prompts in lm-eval. ``tests/test_eval_lmeval.py`` checks that the contexts, continuations
and per-item log-likelihoods of both backends agree. Differences: lm-eval's ``limit`` takes the first N
examples (kamado samples N by seed); few-shot examples are the same (kamado draws them like lm-eval's sampler).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kamado.config import KamadoError

_ARC = {"doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{choices.label.index(answerKey)}}",
        "doc_to_choice": "{{choices.text}}"}
_TQA_TEXT = ("{{'" + "Q: What is human life expectancy in the United States?\\nA: Human life expectancy in the United "
             "States is 78 years.\\n\\nQ: Who was president of the United States in 1955?\\nA: Dwight D. Eisenhower "
             "was president of the United States in 1955.\\n\\nQ: Which party did he belong to?\\nA: He belonged to "
             "the Republican Party.\\n\\nQ: What is the square root of banana?\\nA: I have no comment.\\n\\nQ: How "
             "does a telescope work?\\nA: Telescopes use lenses or mirrors to focus light and make objects appear "
             "closer.\\n\\nQ: Where were the 1992 Olympics held?\\nA: The 1992 Olympics were held in Barcelona, "
             "Spain." + "' + '\\n\\nQ: ' + question + '\\nA:'}}")
_LB_DESC = "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n"

# (task, prompt set) -> lm-eval task config; "data"/"train" are catalog names, "convert" a kamado loader
SPECS: dict[tuple[str, str], dict[str, Any]] = {
    ("arc-easy", "kamado"): {"data": "arc-easy", "train": "arc-easy-train", **_ARC},
    ("arc-challenge", "kamado"): {"data": "arc-challenge", "train": "arc-challenge-train", **_ARC},
    ("hellaswag", "kamado"): {"data": "hellaswag", "train": None, "process_docs": "hellaswag_docs",
                              "doc_to_text": "{{query}}", "doc_to_target": "{{label}}", "doc_to_choice": "choices"},
    ("truthfulqa-mc1", "kamado"): {"data": "truthfulqa-mc", "convert": "truthfulqa", "train": None,
                                   "doc_to_text": _TQA_TEXT, "doc_to_target": 0,
                                   "doc_to_choice": "{{mc1_targets.choices}}"},
    ("truthfulqa-mc2", "kamado"): {"data": "truthfulqa-mc", "convert": "truthfulqa", "train": None,
                                   "doc_to_text": _TQA_TEXT, "doc_to_target": 0,
                                   "doc_to_choice": "{{mc2_targets.choices}}", "process_results": "tqa_mc2"},
    ("jcommonsenseqa", "kamado"): {
        "data": "jcommonsenseqa", "train": "jcommonsenseqa-train",
        "doc_to_text": "質問：{{question}}\n選択肢：{{choice0}}、{{choice1}}、{{choice2}}、{{choice3}}、{{choice4}}\n答え：",
        "doc_to_target": "{{label}}", "doc_to_choice": "{{[choice0, choice1, choice2, choice3, choice4]}}",
        "target_delimiter": "", "fewshot_delimiter": "\n\n",
        "description": "以下の質問に対して、選択肢の中から最も適切な答えを選んでください。\n\n"},
    # lm_eval/tasks/japanese_leaderboard/ja_leaderboard_{jcommonsenseqa,jnli,jsquad}.yaml
    ("jcommonsenseqa", "leaderboard"): {
        "data": "jcommonsenseqa", "train": "jcommonsenseqa-train", "num_fewshot": 3, "description": _LB_DESC,
        "process_docs": "jcqa_docs",
        "doc_to_text": "### 指示：\n出力は以下から選択してください：\n{% for choice in choices %}- {{ choice }}\n"
                       "{% endfor %}\n### 入力：\n{{ question }}\n\n### 応答：",
        "doc_to_target": "label", "doc_to_choice": "choices", "target_delimiter": "\n"},
    ("jnli", "leaderboard"): {
        "data": "jnli", "train": None, "num_fewshot": 3, "description": _LB_DESC,
        "doc_to_text": "### 指示：\n与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\n含意\n矛盾\n"
                       "中立\n\n### 入力：\n前提：{{ sentence1 }}\n仮説：{{ sentence2 }}\n\n### 応答：",
        # JGLUE on the Hub has integer labels; the data-root file has their names
        "doc_to_target": "{{['entailment', 'contradiction', 'neutral'].index(label)}}",
        "doc_to_choice": ["含意", "矛盾", "中立"], "target_delimiter": "\n"},
    ("jsquad", "leaderboard"): {
        "data": "jsquad-valid", "convert": "jsquad", "train": None, "num_fewshot": 2, "description": _LB_DESC,
        "output_type": "generate_until",
        "doc_to_text": "### 指示：\n与えられた文脈から、質問に対する答えを抜き出してください。\n\n### 入力：\n文脈：{% set _context "
                       "= context.split('[SEP]')[-1] %}{{ _context | trim }}\n質問：{{ question }}\n\n### 応答：",
        "doc_to_target": "{{ answers['text'][0] }}", "target_delimiter": "\n"},
    # lm_eval/tasks/japanese_leaderboard/ja_leaderboard_{mgsm,xwinograd}.yaml on the data-root files (converted to
    # the Hub layouts: juletxara/mgsm's question/answer/answer_number, polm-stability/xwinograd-ja's
    # sentence1/sentence2/answer), with lm-eval's own process_results / process_docs
    ("mgsm-ja", "kamado"): {
        "data": "mgsm-ja", "convert": "mgsm", "train": "mgsm-ja-exemplars", "convert_train": "mgsm",
        "num_fewshot": 5, "description": _LB_DESC, "output_type": "generate_until",
        "doc_to_text": "### 指示：\n与えられた問題に対して、ステップごとに答えを導き出してください。\n\n### 入力：\n"
                       "{{ question | replace('問題：', '') }}\n\n### 応答：",
        "doc_to_target": "{{ answer | replace('ステップごとの答え：', '') }}", "target_delimiter": "\n",
        "process_results": "mgsm_results", "metrics": ["acc"]},
    ("xwinograd-ja", "kamado"): {
        "data": "xwinograd-ja", "convert": "xwinograd", "train": None, "process_docs": "xwinograd_docs",
        "doc_to_text": "", "doc_to_target": "label", "doc_to_choice": "choices", "target_delimiter": "",
        "metrics": ["acc"]},
}
for _k in ("arc-easy", "arc-challenge", "hellaswag", "truthfulqa-mc1", "truthfulqa-mc2", "mgsm-ja", "xwinograd-ja"):
    SPECS[(_k, "leaderboard")] = SPECS[(_k, "kamado")]

UTILS = '''"""Written by kamado.eval.lmeval_backend: lm-eval's own process_docs/process_results for local files."""
from lm_eval.tasks.hellaswag.utils import process_docs as _hellaswag
from lm_eval.tasks.japanese_leaderboard.ja_leaderboard_jcommonsenseqa import process_docs as jcqa_docs  # noqa
from lm_eval.tasks.japanese_leaderboard.ja_leaderboard_mgsm import process_results as mgsm_results  # noqa
from lm_eval.tasks.japanese_leaderboard.ja_leaderboard_xwinograd import process_docs as xwinograd_docs  # noqa
from lm_eval.tasks.truthfulqa.utils import process_results_mc2 as tqa_mc2  # noqa

from kamado.eval.tasks import hellaswag_ctx_ab


def hellaswag_docs(dataset):
    """The data root's HellaSwag has ``ctx`` only: add ``ctx_a``/``ctx_b`` (kamado's split), then lm-eval's own."""
    def _ab(doc):
        doc["ctx_a"], doc["ctx_b"] = hellaswag_ctx_ab(doc)
        return doc
    return _hellaswag(dataset.map(_ab))
'''


def lmeval_name(task: str, prompts: str) -> str:
    return f"kamado_{prompts}_{task.replace('-', '_')}"


def _convert(kind: str, src: Path, dest: Path) -> Path:
    from kamado.eval.tasks import _jsquad_load, _mgsm_load, _tqa_load, _xwinograd_load

    if kind == "mgsm":  # problems (TSV) or exemplars (JSON) -> juletxara/mgsm's columns
        from kamado.eval.metrics import mgsm_extract

        # one column type across both splits (a JSON split of nulls does not cast to the other's strings/ints):
        # no worked answer is "", an exemplar's number is the one its answer ends with
        rows = [d | {"answer": d["answer"] or "", "answer_number": d["answer_number"] if d["answer"] is None
                     else mgsm_extract(d["answer"])} for d in _mgsm_load(src)]
    elif kind == "xwinograd":  # the crosslingual_winograd rows -> polm-stability/xwinograd-ja's columns
        rows = [{k: d[k] for k in ("sentence1", "sentence2", "answer")} for d in _xwinograd_load(src)]
    elif kind == "truthfulqa":  # mc_task.json ({answer: label} dicts) -> the Hub's {choices, labels} layout
        rows = [{"question": d["question"],
                 "mc1_targets": {"choices": list(d["mc1_targets"]), "labels": list(d["mc1_targets"].values())},
                 "mc2_targets": {"choices": list(d["mc2_targets"]), "labels": list(d["mc2_targets"].values())}}
                for d in _tqa_load(src)]
    else:  # SQuAD-style JSON -> one row per question, the Hub's JGLUE layout
        rows = [{"id": d["id"], "title": d["title"], "context": d["context"], "question": d["question"],
                 "answers": {"text": d["answers"], "answer_start": [0] * len(d["answers"])}}
                for d in _jsquad_load(src)]
    with open(dest, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return dest


def task_yaml(task: str, prompts: str, root: Path | None, work_dir: Path) -> str:
    """lm-eval task YAML for kamado task ``task`` in prompt set ``prompts`` (files under ``work_dir``)."""
    from kamado.catalog import resolve

    spec = SPECS[(task, prompts)]
    data = resolve(spec["data"], root)
    if spec.get("convert"):
        data = _convert(spec["convert"], data, work_dir / f"{spec['data']}.jsonl")
    files = {"validation": str(data)}
    if spec.get("train"):
        train = resolve(spec["train"], root)
        if spec.get("convert_train"):
            train = _convert(spec["convert_train"], train, work_dir / f"{spec['train']}.jsonl")
        files["train"] = str(train)
    out_type = spec.get("output_type", "multiple_choice")
    lines = [f"task: {lmeval_name(task, prompts)}", "dataset_path: json", "dataset_kwargs:", "  data_files:"]
    lines += [f"    {k}: {json.dumps(v)}" for k, v in files.items()]
    lines += [f"output_type: {out_type}"]
    if "train" in files:
        lines += ["validation_split: validation", "training_split: train", "fewshot_split: train"]
    elif spec.get("num_fewshot"):  # no train split: demonstrations from the evaluated split, the item left out
        lines += ["test_split: validation", "fewshot_split: validation"]
    else:
        lines += ["validation_split: validation"]
    for key in ("num_fewshot", "description", "doc_to_text", "doc_to_target", "doc_to_choice", "target_delimiter",
                "fewshot_delimiter"):
        if key in spec:
            lines.append(f"{key}: {json.dumps(spec[key], ensure_ascii=False)}")
    for key in ("process_docs", "process_results"):
        if key in spec:
            lines.append(f"{key}: !function kamado_lmeval_utils.{spec[key]}")
    if out_type == "generate_until":
        lines += ["generation_kwargs:", '  until: ["\\n\\n"]', "  do_sample: false"]
    if "metrics" in spec:
        lines += ["metric_list:"]
        for m in spec["metrics"]:
            lines += [f"  - metric: {m}", "    aggregation: mean", "    higher_is_better: true"]
    elif out_type == "generate_until":  # JSQuAD: strict exact match after lm-eval's whitespace filter
        lines += ["metric_list:",
                  "  - metric: exact_match", "    regexes_to_ignore: ['^\\s+', '\\s+$']", "    aggregation: mean",
                  "    higher_is_better: true", "filter_list:", "  - name: whitespaces", "    filter:",
                  "      - function: remove_whitespace", "      - function: take_first"]
    else:
        lines += ["metric_list:", "  - metric: acc", "    aggregation: mean", "    higher_is_better: true"]
        if "process_results" not in spec:
            lines += ["  - metric: acc_norm", "    aggregation: mean", "    higher_is_better: true"]
    return "\n".join(lines) + "\n"


def lmeval_tasks(task: str) -> list[str]:
    """lm-eval tasks of one kamado task (TruthfulQA MC is two lm-eval tasks)."""
    return ["truthfulqa-mc1", "truthfulqa-mc2"] if task == "truthfulqa-mc" else [task]


def write_tasks(tasks: list[str], prompts: str, root: Path | None, work_dir: Path) -> Path:
    """Write the YAMLs (and the helper module) of ``tasks`` into ``work_dir``; returns the folder."""
    todo = [x for t in tasks for x in lmeval_tasks(t)]
    unsupported = [t for t in todo if (t, prompts) not in SPECS]
    if unsupported:
        have = sorted({t for t, p in SPECS if p == prompts})
        raise KamadoError(f"--backend lm-eval with prompts {prompts} supports {', '.join(have)}; "
                          f"not {', '.join(unsupported)}")
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "kamado_lmeval_utils.py").write_text(UTILS, encoding="utf-8")
    for t in todo:
        (work_dir / f"{lmeval_name(t, prompts)}.yaml").write_text(task_yaml(t, prompts, root, work_dir),
                                                                   encoding="utf-8")
    return work_dir


def run_lm_eval(model_dir: Path, tasks: list[str], *, root: Path | None, limit: int | None,
                fewshot: dict[str, int], batch_size: int, work_dir: Path, dtype: str = "float32",
                prompts: str = "kamado", log_samples: bool = False) -> dict[str, dict]:
    """Run ``tasks`` with lm-eval on a local HF model; returns kamado-style ``{task: {acc, acc_stderr, ...}}``."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise KamadoError("--backend lm-eval needs lm-eval (pip install 'kamado[eval]')") from None
    from transformers import AutoTokenizer

    from kamado.eval.tasks import get_task
    from kamado.model.integrity import check_model_folder, check_tokenizer_fits

    cfg = check_model_folder(Path(model_dir))
    check_tokenizer_fits(cfg, AutoTokenizer.from_pretrained(str(model_dir)), model_dir, model_dir)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ydir = write_tasks(tasks, prompts, root, work_dir / "lm_eval_tasks")
    tm = TaskManager(include_path=str(ydir))
    out: dict[str, dict] = {}
    for t in tasks:  # one call per task: each may have its own number of demonstrations
        k = fewshot.get(t, get_task(t, prompts).shots)
        names = [lmeval_name(x, prompts) for x in lmeval_tasks(t)]
        # a dict, not "pretrained=PATH,...": a comma in the path must not add options (trust_remote_code=True)
        r = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(model_dir), "dtype": dtype},
                                    tasks=names,
                                    task_manager=tm, num_fewshot=k, batch_size=batch_size, device="cpu",
                                    limit=limit, log_samples=log_samples)
        res = r["results"]
        n = int(r.get("n-samples", {}).get(names[0], {}).get("effective", 0) or 0)
        if t == "truthfulqa-mc":
            m1, m2 = res[names[0]], res[names[1]]
            out[t] = {"mc1": m1.get("acc,none"), "mc1_stderr": m1.get("acc_stderr,none"), "mc2": m2.get("acc,none"),
                      "mc2_stderr": m2.get("acc_stderr,none")}
        elif "exact_match,whitespaces" in res[names[0]]:
            m = res[names[0]]
            out[t] = {"exact_match": m.get("exact_match,whitespaces"),
                      "exact_match_stderr": m.get("exact_match_stderr,whitespaces")}
        else:
            m = res[names[0]]
            out[t] = {k: m.get(f"{k},none") for k in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr")
                      if m.get(f"{k},none") is not None}
        out[t] |= {"n": n, "shots": k, "backend": "lm-eval", "prompts": prompts}
        if log_samples:
            out[t]["samples"] = {x: r["samples"][x] for x in names}
    return out


def compare(model_dir: Path, task: str, prompts: str, n: int, *, root: Path | None, work_dir: Path,
            batch_size: int = 8, max_new_tokens: int = 256) -> dict[str, Any]:
    """Run the first ``n`` items of ``task`` through kamado and lm-eval on ``model_dir``; per-item comparison.

    Returns ``{"items": [{context_same, continuations_same, kamado, lmeval, ...}], "seconds_kamado",
    "seconds_lmeval", "max_abs_diff", "identical"}``: contexts and continuations must be equal strings, the
    log-likelihoods equal within 2e-3 (batching and padding change float sums), the predictions equal.
    Generation tasks compare the generated text (greedy, ``max_new_tokens`` = lm-eval's default 256) after
    lm-eval's whitespace filter.
    """
    import time

    from kamado.eval.generate import generate
    from kamado.eval.harness import load_model
    from kamado.eval.scorer import score_choices
    from kamado.eval.tasks import build_examples, get_task

    t = get_task(task, prompts)
    t0 = time.perf_counter()
    model, tok = load_model(model_dir)
    exs = build_examples(t, root, limit=None, seed=0)[0][:n]
    if t.kind == "generation":
        gens = generate(model, tok, [e.context for e in exs], max_new_tokens=t.max_new_tokens or max_new_tokens,
                        stop=t.stop, batch_size=batch_size)
        # JSQuAD's lm-eval task filters whitespace; MGSM reads the raw completion
        mine: list[Any] = [g.text.strip() if t.strict_em else g.text for g in gens]
    else:
        mine = [[s.loglik for s in sc] for sc in score_choices(model, tok, [(e.context, e.choices) for e in exs],
                                                                batch_size=batch_size)]
    sec_k = time.perf_counter() - t0
    del model
    t0 = time.perf_counter()
    got = run_lm_eval(model_dir, [task], root=root, limit=n, fewshot={}, batch_size=batch_size, work_dir=work_dir,
                      prompts=prompts, log_samples=True)[task]
    sec_l = time.perf_counter() - t0
    samples = {name: sorted(s, key=lambda x: x["doc_id"]) for name, s in got["samples"].items()}
    items, worst, same = [], 0.0, True
    for i, ex in enumerate(exs):
        if t.kind == "generation":
            s = next(iter(samples.values()))[i]
            ctx_same = s["arguments"][0][0] == ex.context
            theirs = s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"]
            ok = ctx_same and theirs == mine[i]
            item = {"id": ex.id, "context_same": ctx_same, "kamado": mine[i], "lmeval": theirs}
            if t.score is not None:  # the per-item metric too (MGSM: the number read from the completion)
                m = t.metrics[0]
                item |= {"kamado_" + m: float(t.score(mine[i], ex.gold)[m]), "lmeval_" + m: float(s[m])}
                ok = ok and item["kamado_" + m] == item["lmeval_" + m]
            items.append(item | {"same": ok})
            same &= ok
            continue
        ll_l: list[float] = []
        ctx_same = cont_same = True
        offset = 0
        for ss in samples.values():
            s = ss[i]
            args = s["arguments"]
            ctx_same &= all(a[0] == ex.context for a in args)
            k = len(args)
            cont_same &= [a[1] for a in args] == list(ex.choices[offset:offset + k])
            offset += k
            ll_l += [r[0][0] for r in s["resps"]]
        diff = max((abs(a - b) for a, b in zip(mine[i], ll_l, strict=True)), default=0.0)
        worst = max(worst, diff)
        ok = ctx_same and cont_same and diff < 2e-3
        items.append({"id": ex.id, "context_same": ctx_same, "continuations_same": cont_same, "max_abs_diff": diff,
                      "kamado": mine[i], "lmeval": ll_l, "same": ok})
        same &= ok
    return {"items": items, "identical": same, "max_abs_diff": worst, "seconds_kamado": sec_k,
            "seconds_lmeval": sec_l, "lmeval_metrics": {k: v for k, v in got.items() if k != "samples"}}
