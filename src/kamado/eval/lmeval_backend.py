"""``kamado eval --backend lm-eval``: the same multiple-choice tasks run by lm-evaluation-harness 0.4.13.

lm-eval runs offline here on task YAMLs written on the fly, whose ``dataset_path: json`` points at the
data-root files; prompts are the ones of :mod:`kamado.eval.tasks`, so the two backends can be compared
(``tests/test_eval_lmeval.py`` checks that per-example log-likelihoods agree). Differences: lm-eval's
``limit`` takes the first N examples (kamado samples N by seed), and its few-shot sampler is its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kamado.config import KamadoError

_ARC = {"doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{choices.label.index(answerKey)}}",
        "doc_to_choice": "{{choices.text}}"}
SPECS: dict[str, dict[str, Any]] = {
    "arc-easy": {"data": "arc-easy", "train": "arc-easy-train", **_ARC},
    "arc-challenge": {"data": "arc-challenge", "train": "arc-challenge-train", **_ARC},
    "hellaswag": {"data": "hellaswag", "train": None, "doc_to_text": "{{activity_label}}: {{ctx}}",
                  "doc_to_target": "{{label}}", "doc_to_choice": "{{endings}}"},
    "jcommonsenseqa": {"data": "jcommonsenseqa", "train": "jcommonsenseqa-train",
                       "doc_to_text": "質問：{{question}}\n選択肢：{{choice0}}、{{choice1}}、{{choice2}}、{{choice3}}、"
                                      "{{choice4}}\n答え：",
                       "doc_to_target": "{{label}}",
                       "doc_to_choice": "{{[choice0, choice1, choice2, choice3, choice4]}}",
                       "target_delimiter": "", "fewshot_delimiter": "\n\n",
                       "description": "以下の質問に対して、選択肢の中から最も適切な答えを選んでください。\n\n"},
}


def _yaml(name: str, spec: dict[str, Any], root: Path | None) -> str:
    from kamado.registry import resolve

    files = {"validation": str(resolve(spec["data"], root))}
    if spec.get("train"):
        files["train"] = str(resolve(spec["train"], root))
    lines = [f"task: kamado_{name.replace('-', '_')}", "dataset_path: json", "dataset_kwargs:", "  data_files:"]
    lines += [f"    {k}: {json.dumps(v)}" for k, v in files.items()]
    lines += ["output_type: multiple_choice", "validation_split: validation"]
    if "train" in files:
        lines += ["training_split: train", "fewshot_split: train"]
    for key in ("doc_to_text", "doc_to_target", "doc_to_choice", "target_delimiter", "fewshot_delimiter",
                "description"):
        if key in spec:
            lines.append(f"{key}: {json.dumps(spec[key], ensure_ascii=False)}")
    lines += ["metric_list:", "  - metric: acc", "    aggregation: mean", "    higher_is_better: true",
              "  - metric: acc_norm", "    aggregation: mean", "    higher_is_better: true"]
    return "\n".join(lines) + "\n"


def run_lm_eval(model_dir: Path, tasks: list[str], *, root: Path | None, limit: int | None,
                fewshot: dict[str, int], batch_size: int, work_dir: Path, dtype: str = "float32") -> dict[str, dict]:
    """Run ``tasks`` with lm-eval on a local HF model; returns kamado-style ``{task: {acc, acc_stderr, ...}}``."""
    unsupported = [t for t in tasks if t not in SPECS]
    if unsupported:
        raise KamadoError(f"--backend lm-eval supports {', '.join(SPECS)}; not {', '.join(unsupported)}")
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise KamadoError("--backend lm-eval needs lm-eval (pip install 'kamado[eval]')") from None
    from transformers import AutoTokenizer

    from kamado.eval.tasks import TASKS
    from kamado.model.integrity import check_model_folder, check_tokenizer_fits

    cfg = check_model_folder(Path(model_dir))
    check_tokenizer_fits(cfg, AutoTokenizer.from_pretrained(str(model_dir)), model_dir, model_dir)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ydir = work_dir / "lm_eval_tasks"
    ydir.mkdir(parents=True, exist_ok=True)
    for t in tasks:
        (ydir / f"{t}.yaml").write_text(_yaml(t, SPECS[t], root), encoding="utf-8")
    tm = TaskManager(include_path=str(ydir))
    out: dict[str, dict] = {}
    for t in tasks:  # one call per task: each may have its own number of demonstrations
        name = f"kamado_{t.replace('-', '_')}"
        k = fewshot.get(t, TASKS[t].shots)
        # a dict, not "pretrained=PATH,...": a comma in the path must not add options (trust_remote_code=True)
        r = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(model_dir), "dtype": dtype},
                                    tasks=[name],
                                    task_manager=tm, num_fewshot=k, batch_size=batch_size, device="cpu",
                                    limit=limit)
        res = r["results"][name]
        out[t] = {"acc": res.get("acc,none"), "acc_stderr": res.get("acc_stderr,none"),
                  "acc_norm": res.get("acc_norm,none"), "acc_norm_stderr": res.get("acc_norm_stderr,none"),
                  "n": int(r.get("n-samples", {}).get(name, {}).get("effective", 0) or 0), "shots": k,
                  "backend": "lm-eval"}
    return out
