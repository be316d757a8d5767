"""The ``kamado`` command: one subcommand per stage, and ``kamado run RECIPE.yaml``.

Heavy libraries (torch, transformers, ray) are imported inside commands, never at import time, so
``--help`` and recipe validation answer at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Annotated

import typer

from kamado.config import EXIT_PREEMPTED, KamadoError, Preempted

app = typer.Typer(
    name="kamado",
    help="From raw Japanese/English web text to an evaluated, instruction-tuned LLaMA-style model.\n\n"
    "Example: kamado run recipes/tiny.yaml --out runs/tiny",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _scratch_dirs() -> None:
    """Point every tool's scratch files into a kamado cache folder instead of the system temp folder."""
    base = Path(os.environ.get("KAMADO_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kamado"))
    for var, sub in (("RAY_TMPDIR", "ray"), ("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("HF_HOME", "hf"),
                     ("WANDB_DIR", "wandb"), ("MPLCONFIGDIR", "mpl"), ("TRITON_CACHE_DIR", "triton")):
        if not os.environ.get(var):
            os.environ[var] = str(base / sub)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


DataRoot = Annotated[Path | None, typer.Option("--data-root", help="Folder of the shared data sets "
                                               "(default: $KAMADO_DATA_ROOT, else ../shared/data).")]


@app.command("run")
def run_cmd(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML, e.g. recipes/tiny.yaml.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default: runs/<recipe name>).")] = None,
    until: Annotated[str | None, typer.Option(help="Stop after this stage.")] = None,
    force: Annotated[str | None, typer.Option(help="Redo this stage and every stage after it.")] = None,
    only: Annotated[str | None, typer.Option(help="Run just this stage (its upstream must be done).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a recipe value: KEY.PATH=VALUE.")] = None,
    data_root: DataRoot = None,
) -> None:
    """Run a recipe's stages in order; finished stages whose manifest matches are skipped.

    Each stage writes its own folder inside the run folder. When the output is not a terminal, progress is
    printed as plain lines (every KAMADO_PROGRESS_EVERY seconds, default 15).

    Examples:
      kamado run recipes/tiny.yaml --out runs/tiny
      kamado run recipes/tiny.yaml --out runs/tiny --until data
      kamado run recipes/tiny.yaml --out runs/tiny --force pretrain --set pretrain.train.steps=300
      kamado run recipes/experiments/mixture.yaml --out runs/mixture   (variants x seeds: experiment.md)
    """
    from kamado.experiment import run_experiment, split_experiment
    from kamado.recipe import parse_recipe, read_recipe_data
    from kamado.runner import run_recipe, summary_table
    from kamado.ui import console

    data, exp = split_experiment(read_recipe_data(recipe, set_ or []), str(recipe))
    if exp is not None:
        if only is not None:
            raise KamadoError("--only: not available for an experiment recipe (use --until or --force)")
        out = out or Path("runs") / str(data.get("name", recipe.stem))
        run_experiment(data, exp, out, source=str(recipe), recipe_dir=recipe.resolve().parent,
                       data_root=data_root, until=until, force=force)
        console.print(f"[bold green]experiment:[/] {(out / 'experiment.md').resolve()}")
        return
    rec = parse_recipe(data, str(recipe))
    out = out or Path("runs") / rec.name
    outcomes = run_recipe(rec, out, recipe_dir=recipe.resolve().parent, data_root=data_root,
                          until=until, force=force, only=only)
    console.print(summary_table(outcomes))
    report = out / "report.html"
    if report.is_file():
        console.print(f"[bold green]report:[/] {report.resolve()}")
    console.print(f"run folder: {out.resolve()}  (total {sum(o.seconds for o in outcomes):.1f}s)")


def _reflow(doc: str | None) -> str | None:
    """Join the hard-wrapped lines of each docstring paragraph so rich reflows them to the terminal width;
    indented lines (examples), lines after one ending in ":" and list items keep their own line."""
    if not doc:
        return doc
    import inspect

    from rich.markup import escape

    doc = escape(doc)  # help is plain text: "[[rating]]" is shown, not read as rich markup

    paras = []
    for para in inspect.cleandoc(doc).split("\n\n"):
        lines: list[str] = []
        for ln in para.split("\n"):
            if (lines and ln and not ln[0].isspace() and not lines[-1][:1].isspace() and not lines[-1].endswith(":")
                    and not ln.startswith(("-", "*", "•"))):
                lines[-1] += " " + ln.strip()
            else:
                lines.append(ln)
        paras.append("\n".join(lines))
    return "\n\n".join(paras)


def _reflow_help(t: typer.Typer) -> None:
    """Reflow the help of every command of ``t`` and of its sub-apps (see :func:`_reflow`)."""
    for ci in t.registered_commands:
        if ci.help:
            ci.help = _reflow(ci.help)
        elif ci.callback is not None and ci.callback.__doc__:
            ci.callback.__doc__ = _reflow(ci.callback.__doc__)
    for g in t.registered_groups:
        if g.typer_instance is not None:
            _reflow_help(g.typer_instance)


def _register() -> None:
    from kamado.cli import bench as bench_cli
    from kamado.cli import chat as chat_cli
    from kamado.cli import corpus as corpus_cli
    from kamado.cli import data as data_cli
    from kamado.cli import eval as eval_cli
    from kamado.cli import plan as plan_cli
    from kamado.cli import report as report_cli
    from kamado.cli import serve as serve_cli
    from kamado.cli import tokenizer as tokenizer_cli
    from kamado.cli import train as train_cli
    from kamado.cli import tune as tune_cli

    app.add_typer(corpus_cli.app, name="corpus", help="Clean, deduplicate and score raw text corpora.")
    app.add_typer(tokenizer_cli.app, name="tokenizer", help="Train and compare SentencePiece tokenizers.")
    app.add_typer(data_cli.app, name="data", help="Data sets, token packing and the ja/en mixture.")
    app.command("pretrain")(train_cli.pretrain)
    app.command("tune")(tune_cli.tune)
    app.command("eval")(eval_cli.evaluate)
    app.command("judge")(eval_cli.judge)
    app.command("serve")(serve_cli.serve)
    app.command("chat")(chat_cli.chat)
    app.command("bench")(bench_cli.bench)
    app.command("plan")(plan_cli.plan)
    app.command("report")(report_cli.report)
    _reflow_help(app)


_register()


_PATH_NAMES = ("path", "p", "f", "file", "fname", "filename", "src", "dst", "out", "folder", "d", "model_dir",
               "ckpt", "tok_dir", "name", "pretrained_model_name_or_path")


def _culprit(exc: BaseException) -> str | None:
    """A file or folder the failing code was working on: the exception's own filename, else a path-like local
    of the innermost kamado frame (walking outwards), so a message can name it."""
    fn = getattr(exc, "filename", None)
    if fn:
        return str(fn)
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for fr in reversed(frames):
        if "kamado" not in fr.f_code.co_filename or "site-packages" in fr.f_code.co_filename:
            continue
        for n in _PATH_NAMES:
            v = fr.f_locals.get(n)
            if isinstance(v, Path) or (isinstance(v, str) and os.sep in v and len(v) < 1000):
                return str(v)
    return None


def _innermost(exc: BaseException) -> TracebackType | None:
    """The innermost traceback entry of ``exc`` (where it was raised), or None."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb


def _origin(exc: BaseException) -> str:
    """``module.py:line`` of the innermost frame that raised ``exc``."""
    last = _innermost(exc)
    if last is None:
        return "?"
    return f"{Path(last.tb_frame.f_code.co_filename).name}:{last.tb_lineno}"


def _from_library(exc: BaseException) -> bool:
    """Whether ``exc`` was raised outside kamado's own code (a library refusing its input)."""
    last = _innermost(exc)
    return last is not None and "/kamado/" not in last.tb_frame.f_code.co_filename.replace(os.sep, "/")


def error_message(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for an exception that reached the command line.

    2: bad input or environment (kamado's own errors, OS errors, unreadable JSON/weights/tokenizers, a library
    refusing a value); 75: training preempted with a checkpoint (run it again to resume); 1: anything else (a
    bug: the message says so and how to see the traceback).
    """
    import json

    name = type(exc).__name__
    where = _culprit(exc)
    at = f"{where}: " if where else ""
    if isinstance(exc, Preempted):
        return str(exc), EXIT_PREEMPTED
    if isinstance(exc, KamadoError):
        return str(exc), 2
    from kamado.folders import disk_full

    if disk_full(exc):  # also when a library wraps it (safetensors: "StorageFull"), not "damaged file"
        return f"{at}no space left on device; free some space or write elsewhere", 2
    if isinstance(exc, PermissionError):
        return f"{at}permission denied (cannot read or write here; choose another location)", 2
    if isinstance(exc, FileNotFoundError):
        return f"{at}no such file or folder ({exc.strerror or exc})", 2
    if isinstance(exc, IsADirectoryError | NotADirectoryError | FileExistsError):
        return f"{at}{exc.strerror or exc}", 2
    if isinstance(exc, OSError):
        if exc.strerror:
            return f"{at}{exc.strerror}", 2
        return f"{at}{str(exc).splitlines()[0] if str(exc) else name}", 2
    if isinstance(exc, json.JSONDecodeError):
        return f"{at}not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", 2
    if isinstance(exc, UnicodeDecodeError):
        return (f"{at}not UTF-8 text ({exc.reason} at byte {exc.start}); convert it, or pass --encoding where the "
                "command has it"), 2
    first = (str(exc).strip().splitlines() or [name])[0][:400]
    if name in ("SafetensorError", "HeaderTooLarge", "HeaderTooSmall", "InvalidHeaderDeserialization"):
        return f"{at}damaged or not a safetensors weights file ({first})", 2
    mod = type(exc).__module__ or ""
    if mod.startswith(("tokenizers", "sentencepiece", "safetensors", "yaml", "pyarrow", "zstandard")) or (
            isinstance(exc, ValueError) and _from_library(exc)):
        return f"{at}{first} ({name})", 2
    return (f"internal error: {name}: {first} (at {_origin(exc)}); this is a bug in kamado. Rerun with --debug "
            "(or KAMADO_DEBUG=1) for the traceback"), 1


def main() -> None:
    """Entry point: user errors print one clear message and exit 2, without a traceback; OS and library errors
    become a one-line message naming the file (exit 2); anything else is reported as a bug (exit 1).
    ``--debug`` (anywhere on the command line) or KAMADO_DEBUG=1 shows the full traceback instead."""
    _scratch_dirs()
    if "--debug" in sys.argv[1:]:
        sys.argv = [a for i, a in enumerate(sys.argv) if i == 0 or a != "--debug"]
        os.environ["KAMADO_DEBUG"] = "1"
    debug = os.environ.get("KAMADO_DEBUG", "") not in ("", "0")
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the one top-level handler
        msg, code = error_message(e)
        if debug and not isinstance(e, KamadoError):
            raise
        from rich.text import Text

        from kamado.ui import console

        # the message is plain text: a path or value with brackets is printed as it is, never read as markup
        label = ("stopped:", "bold yellow") if code == EXIT_PREEMPTED else ("error:", "bold red")
        console.print(Text.assemble(label, " ", msg), highlight=False, soft_wrap=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
