"""Stage commands' options and the config fields they set: one default and one help text per setting."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from pydantic import BaseModel
from typer.testing import CliRunner

from kamado.cli import app
from kamado.cli.options import setting, shown_value
from kamado.data.config import PackConfig
from kamado.eval.config import EvalConfig
from kamado.eval.judge import JudgeSettings
from kamado.tokenizer.config import TokenizerConfig
from kamado.train.config import PretrainConfig
from kamado.tune.config import TuneConfig

# command -> (config model, recipe section or None, {option parameter: field path}); a recipe section means the
# option overrides the setting only when given (default None, the section's default shown in the help)
MAPPED: dict[str, tuple[type[BaseModel], str | None, dict[str, str]]] = {
    "data pack": (PackConfig, None, {"workers": "workers", "valid_fraction": "valid_fraction",
                                     "executor": "executor"}),
    "tokenizer train": (TokenizerConfig, None, {"vocab_size": "vocab_size", "model_type": "model_type",
                                                "weights": "weights", "sample_chars": "sample_chars",
                                                "normal_form": "normal_form"}),
    "pretrain": (PretrainConfig, "pretrain", {"preset": "model.preset", "steps": "train.steps",
                                              "nproc": "train.nproc", "precision": "train.precision",
                                              "seed": "train.seed"}),
    "tune": (TuneConfig, "tune", {"data": "data", "method": "methods", "steps": "train.steps",
                                  "max_examples": "max_examples", "seq_len": "train.seq_len",
                                  "batch_size": "train.batch_size", "lr": "train.optimizer.lr",
                                  "min_lr": "train.optimizer.min_lr", "lora_lr": "lora_lr", "lora_r": "lora.r",
                                  "precision": "train.precision"}),
    "eval": (EvalConfig, "eval", {"tasks": "tasks", "limit": "limit", "fewshot": "fewshot",
                                  "batch_size": "batch_size", "ppl_source": "ppl_sources",
                                  "ppl_max_chars": "ppl_max_chars", "dtype": "dtype", "threads": "threads",
                                  "backend": "backend", "prompts": "prompts"}),
    "judge": (JudgeSettings, None, {"questions": "questions", "model_url": "model_url", "model": "model",
                                    "judge_url": "judge_url", "judge_model": "judge_model",
                                    "api_key_env": "api_key_env", "model_api_key_env": "model_api_key_env",
                                    "turns": "turns", "limit": "limit", "max_tokens": "max_tokens",
                                    "judge_temperature": "judge_temperature", "concurrency": "concurrency",
                                    "retries": "retries", "timeout": "timeout", "answers": "answers_file",
                                    "judge_prompts": "judge_prompts", "samples": "samples", "dry_run": "dry_run"}),
}
# flags of pretrain that only switch a recipe setting one way: their default is the field's
FLAGS = {"pretrain": {"compile_": "train.compile", "resume": "train.resume"}}
# options given as text that the command parses into the field's value: (command, option) -> parser
PARSED = {("judge", "turns"): lambda v: [int(t) for t in v.split(",")]}
# options named like a field that are not that field, with the reason
NOT_FIELDS = {
    ("tune", "seed"): "the run's seed (recipe top level), which train.seed defaults to",
    ("tune", "base"): "required here: there is no pretrain stage to take hf/ from",
}


def _command(path: str) -> Any:
    cmd = typer.main.get_command(app)
    for part in path.split():
        cmd = cmd.commands[part]  # type: ignore[attr-defined]
    return cmd


def _field_names(model: type[BaseModel]) -> set[str]:
    """Every field name of ``model`` and of the settings models nested in it."""
    names = set()
    for name, f in model.model_fields.items():
        names.add(name)
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            names |= _field_names(f.annotation)
    return names


@pytest.mark.parametrize("path", list(MAPPED))
def test_option_defaults_and_help_are_the_fields(path: str) -> None:
    model, section, mapped = MAPPED[path]
    flags = FLAGS.get(path, {})
    params = {p.name: p for p in _command(path).params if p.param_type_name == "option"}
    for name, field_path in {**mapped, **flags}.items():
        p = params[name]
        f, default = setting(model, field_path)
        assert f.description and p.help.startswith(f.description), (path, name)
        if section is not None and name not in flags:
            assert p.default is None, (path, name)  # the recipe's or --set's value stands unless given
            assert p.show_default == f"{section}.{field_path}: {shown_value(default)}", (path, name)
        else:
            value = PARSED.get((path, name), lambda v: v)(p.default)
            assert value == default, f"{path} --{name}: default {p.default!r}, field {field_path}: {default!r}"
    # an option named like a setting but declared by hand would be a second source of its default and help
    unmapped = {n for n in params if n.rstrip("_") in _field_names(model)} - set(mapped) - set(flags)
    assert unmapped == {n for (c, n) in NOT_FIELDS if c == path}


@pytest.mark.parametrize("path", [*MAPPED, "data list", "data download", "data mixture", "tokenizer stats"])
def test_help_renders(path: str) -> None:
    res = CliRunner().invoke(app, [*path.split(), "--help"], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    for p in _command(path).params:
        if p.param_type_name == "option":
            assert p.opts[0] in res.output, (path, p.opts[0])
    if path in MAPPED and MAPPED[path][1] is not None:
        assert f"({MAPPED[path][1]}." in res.output  # the section defaults are shown


def test_eval_tasks_help_names_every_task_and_suite() -> None:
    from kamado.eval.tasks import SUITES, TASKS

    desc = EvalConfig.model_fields["tasks"].description or ""
    listed = {t.strip(" .") for part in desc.split(":", 1)[1].split(";") for t in part.replace("suites", "").split(",")}
    assert set(TASKS) | {"perplexity"} | set(SUITES) <= listed, set(TASKS) | set(SUITES) - listed
