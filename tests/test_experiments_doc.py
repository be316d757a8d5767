"""docs/experiments.md's tables are what scripts/experiments_doc.py makes of the committed experiment JSON."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("experiments_doc", ROOT / "scripts" / "experiments_doc.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_experiment_tables_are_up_to_date() -> None:
    doc = _script()
    text = doc.DOC.read_text(encoding="utf-8")
    names = [m.group("name") for m in doc.BLOCK.finditer(text)]
    assert {"scaling", "mixture", "cleaning", "full-vs-lora"} <= set(names)
    assert doc.render(text) == text, "run python scripts/experiments_doc.py"


def test_every_comparison_row_says_what_its_interval_says() -> None:
    doc = _script()
    e = {"comparisons": [{"baseline": "a", "variant": "b", "metric": "m", "mean": -0.1, "ci95": [-0.2, -0.01],
                          "resolved": True, "seeds": [1, 2, 3]},
                         {"baseline": "a", "variant": "c", "metric": "m", "mean": 0.05, "ci95": [-0.02, 0.1],
                          "resolved": False, "seeds": [1, 2, 3]}]}
    rows = doc.comparisons_table(e["comparisons"]).splitlines()[2:]
    assert "**resolved**" in rows[0] and "not resolved at this budget" in rows[1]
