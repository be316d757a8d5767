"""Cross-check against lm-eval 0.4.13 (offline, local task YAML): same log-likelihoods, acc and acc_norm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _toy import build_toy_model

from kamado.eval.harness import EvalSettings, evaluate_model, load_model

CACHE = Path(__file__).resolve().parents[1] / ".cache"
N = 40

TASK_YAML = """task: kamado_arc_easy_check
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {path}
output_type: multiple_choice
validation_split: validation
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


@pytest.mark.slow
def test_arc_easy_matches_lm_eval(data_root, tmp_path, monkeypatch):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    toy = build_toy_model(CACHE / "toy-eval-v1", data_root)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tasks_dir = tmp_path / "tasks"
        tasks_dir.mkdir()
        (tasks_dir / "check.yaml").write_text(TASK_YAML.format(path=data_root / "en_eval/arc_easy/validation_first_half.jsonl"))
        r = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={toy},dtype=float32",
                                    tasks=["kamado_arc_easy_check"], task_manager=TaskManager(include_path=str(tasks_dir)),
                                    num_fewshot=0, batch_size=8, device="cpu", limit=N, log_samples=True)
        theirs = r["samples"]["kamado_arc_easy_check"]
        model, tok = load_model(toy)
        mine = evaluate_model(model, tok, ["arc-easy"], EvalSettings(limit=None, fewshot={"arc-easy": 0}),
                              root=data_root, detail_dir=tmp_path / "det")
    finally:
        torch.set_num_threads(n)
    det = [json.loads(x) for x in (tmp_path / "det" / "arc-easy.jsonl").read_text().splitlines()][:N]
    assert len(theirs) == N
    acc = accn = 0
    for s, d in zip(sorted(theirs, key=lambda s: s["doc_id"]), det, strict=True):
        ll = [x[0][0] for x in s["resps"]]
        assert d["logliks"] == pytest.approx(ll, abs=2e-3)
        acc += s["acc"] == 1.0
        accn += s["acc_norm"] == 1.0
        assert d["correct"] == (s["acc"] == 1.0) and d["correct_norm"] == (s["acc_norm"] == 1.0)
    assert mine["arc-easy"]["n"] == 285 and acc + accn > 0
