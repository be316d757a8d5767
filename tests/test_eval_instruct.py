"""The dolly-ja-heldout task: greedy answers to held-out instructions, scored against the references."""

from __future__ import annotations

import json
from pathlib import Path

from kamado.eval.harness import EvalSettings, evaluate_model, load_model


def test_instruct_task_on_a_toy_model(toy: Path, data_root: Path, tmp_path: Path, one_thread: None) -> None:
    model, tok = load_model(toy)
    s = EvalSettings(limit=3, batch_size=2, seed=5, max_new_tokens=4)
    res = evaluate_model(model, tok, ["dolly-ja-heldout"], s, root=data_root, detail_dir=tmp_path)
    r = res["dolly-ja-heldout"]
    assert r["n"] == 3 and 0.0 <= r["chrf"] <= 100.0 and 0.0 <= r["rouge_l"] <= 100.0
    lines = (tmp_path / "dolly-ja-heldout.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all('"reference"' in x for x in lines)
    # the sampled items come from the held-out end of the file (ids are dolly-ja's index field)
    assert all(int(json.loads(x)["id"]) >= 2500 for x in lines)
