"""The runner: stages skip when their manifest matches, redo when config or upstream change, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from kamado import runner
from kamado.config import KamadoError
from kamado.manifest import read_manifest, verify_outputs
from kamado.recipe import parse_recipe
from kamado.stage import STAGE_NAMES as STAGES

TINY = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"



def calls(log: Path) -> list[str]:
    out = log.read_text().split() if log.exists() else []
    log.write_text("")
    return out


def recipe(**over: object):
    d = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    return parse_recipe(d, overrides=[f"{k}={v}" for k, v in over.items()])


def test_skip_redo_until_force(fake: Path, tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "run"
    res = runner.run_recipe(recipe(), out, data_root=data_root)
    assert [o.status for o in res] == ["ran"] * 7 and calls(fake) == list(STAGES)
    for s in STAGES:
        man = read_manifest(out / s)
        assert man and man["stage"] == s and man["versions"]["python"] and "wall_s" in man["timings"]
        assert verify_outputs(out / s) == []

    res = runner.run_recipe(recipe(), out, data_root=data_root)
    assert [o.status for o in res] == ["skipped"] * 7 and calls(fake) == []

    # a changed setting of one stage redoes it and everything downstream of it
    runner.run_recipe(recipe(**{"pretrain.train.steps": 7}), out, data_root=data_root)
    assert calls(fake) == ["pretrain", "tune", "eval", "report"]

    # a copy of a finished run, re-run with a changed tokenizer setting
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    runner.run_recipe(recipe(**{"pretrain.train.steps": 7, "tokenizer.vocab_size": 4000}), copy, data_root=data_root)
    assert calls(fake) == ["tokenizer", "data", "pretrain", "tune", "eval", "report"]

    # deleting one stage's output redoes only it and the stages after it
    shutil.rmtree(out / "data")
    runner.run_recipe(recipe(**{"pretrain.train.steps": 7}), out, data_root=data_root)
    assert calls(fake) == ["data", "pretrain", "tune", "eval", "report"]

    res = runner.run_recipe(recipe(**{"pretrain.train.steps": 7}), out, data_root=data_root, until="tokenizer")
    assert [o.stage for o in res] == ["corpus", "tokenizer"] and calls(fake) == []

    runner.run_recipe(recipe(**{"pretrain.train.steps": 7}), out, data_root=data_root, force="eval")
    assert calls(fake) == ["eval", "report"]


def test_killed_stage_resumes_in_place(fake: Path, tmp_path: Path, data_root: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    monkeypatch.setenv("FAKE_STAGE_CRASH", "pretrain")
    with pytest.raises(RuntimeError, match="pretrain killed"):
        runner.run_recipe(recipe(), out, data_root=data_root)
    assert calls(fake) == ["corpus", "tokenizer", "data", "pretrain"]
    assert read_manifest(out / "pretrain") is None and (out / "pretrain" / "partial.txt").is_file()

    monkeypatch.delenv("FAKE_STAGE_CRASH")
    runner.run_recipe(recipe(), out, data_root=data_root)
    assert calls(fake) == ["pretrain", "tune", "eval", "report"]
    assert json.loads((out / "pretrain" / "result.json").read_text())["resumed"] is True

    # a partial attempt under a different config is cleared, not resumed
    monkeypatch.setenv("FAKE_STAGE_CRASH", "tune")
    with pytest.raises(RuntimeError):
        runner.run_recipe(recipe(**{"tune.train.steps": 3}), out, data_root=data_root)
    monkeypatch.delenv("FAKE_STAGE_CRASH")
    runner.run_recipe(recipe(**{"tune.train.steps": 4}), out, data_root=data_root)
    assert json.loads((out / "tune" / "result.json").read_text())["resumed"] is False


def test_bad_stage_flags(fake: Path, tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(KamadoError, match="--until 'pretrian'"):
        runner.run_recipe(recipe(), tmp_path / "r", data_root=data_root, until="pretrian")


def test_only_runs_one_stage_and_needs_its_upstream(fake: Path, tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(KamadoError, match="--only tune: upstream stage 'corpus' has not finished"):
        runner.run_recipe(recipe(), out, data_root=data_root, only="tune")
    runner.run_recipe(recipe(), out, data_root=data_root)
    calls(fake)
    res = runner.run_recipe(recipe(**{"tune.train.steps": 5}), out, data_root=data_root, only="tune")
    assert [o.stage for o in res] == ["tune"] and calls(fake) == ["tune"]


def test_failing_stage_keeps_the_previous_finished_result(fake: Path, tmp_path: Path, data_root: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    runner.run_recipe(recipe(), out, data_root=data_root)
    calls(fake)
    finished = (out / "pretrain" / "result.json").read_text()
    monkeypatch.setenv("FAKE_STAGE_CRASH", "pretrain")
    for over, force in (({"pretrain.train.steps": 7}, None), ({}, "pretrain")):
        with pytest.raises(RuntimeError, match="pretrain killed"):
            runner.run_recipe(recipe(**over), out, data_root=data_root, force=force)
        assert (out / "pretrain.prev" / "result.json").read_text() == finished
        assert read_manifest(out / "pretrain.prev") is not None
        assert (out / "pretrain" / "partial.txt").is_file()  # the failed attempt, resumable in place
    monkeypatch.delenv("FAKE_STAGE_CRASH")
    calls(fake)
    # the original settings again: the kept result is put back, nothing is redone
    res = runner.run_recipe(recipe(), out, data_root=data_root)
    assert [o.status for o in res] == ["skipped"] * 7 and calls(fake) == []
    assert (out / "pretrain" / "result.json").read_text() == finished and not (out / "pretrain.prev").exists()
    # a successful redo replaces it and removes the kept copy
    runner.run_recipe(recipe(**{"pretrain.train.steps": 7}), out, data_root=data_root)
    assert calls(fake) == ["pretrain", "tune", "eval", "report"]
    assert not (out / "pretrain.prev").exists() and not (out / "tune.prev").exists()
