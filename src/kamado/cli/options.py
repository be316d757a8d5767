"""Command-line options made from config fields: the default and the help of an option are those of the field
(``Field(default, description=...)``), declared once in the config model.

- :func:`option`: one field as a typer option, in the default style (``workers: int = option(CorpusConfig, "workers")``).
- :func:`recipe_option`: a setting of a recipe section (``train.steps`` of ``PretrainConfig``) that a command
  overrides only when the option is given: the option's default is None (the recipe's or ``--set``'s value, else
  the section's default, stands), and the help shows that default as ``[default: (pretrain.train.steps: 200)]``.
- :func:`settings_options`: every field of a settings model as an option (``--name``, ``--flag/--no-flag`` for
  booleans); the command receives them as one validated model instance.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterable
from typing import Any

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


def field_default(model: type[BaseModel], name: str) -> Any:
    """The default of ``model``'s field ``name`` (its factory called)."""
    return model.model_fields[name].get_default(call_default_factory=True)


def field_help(model: type[BaseModel], name: str) -> str:
    """The description of ``model``'s field ``name``; a field an option is made from must have one."""
    desc = model.model_fields[name].description
    if not desc:
        raise TypeError(f"{model.__name__}.{name} has no description to use as an option's help")
    return desc


def _flag(name: str, annotation: Any) -> str:
    opt = name.replace("_", "-")
    return f"--{opt}/--no-{opt}" if annotation is bool else f"--{opt}"


def option(model: type[BaseModel], name: str, *flags: str, help: str | None = None, default: Any = ...,
           note: str = "", **kw: Any) -> Any:
    """A typer option for field ``name`` of ``model``: its default and help (``help`` overrides the text only,
    ``note`` is added after it, ``default`` overrides the default: for a command whose default differs from the
    config's on purpose, which the help must then say); ``flags`` default to ``--field-name`` (``--x/--no-x`` for
    a boolean)."""
    f = model.model_fields[name]
    decls = flags or (_flag(name, f.annotation),)
    value = field_default(model, name) if default is ... else default
    text = (help or field_help(model, name)) + (f" {note}" if note else "")
    return typer.Option(value, *decls, help=text, **kw)


def setting(model: type[BaseModel], path: str) -> tuple[FieldInfo, Any]:
    """The field at dotted ``path`` of ``model`` (``train.optimizer.lr``) and its default there: the enclosing
    fields' defaults count (``TuneConfig``'s ``train.steps`` is 100, not ``TrainConfig``'s 200)."""
    *parents, last = path.split(".")
    value: Any = None
    for i, name in enumerate(parents):
        value = field_default(model, name) if i == 0 else getattr(value, name)
        model = model.model_fields[name].annotation  # type: ignore[assignment]
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{path}: {name} is not a settings model")
    f = model.model_fields[last]
    return f, (field_default(model, last) if not parents else getattr(value, last))


def shown_value(value: Any) -> str:
    """A setting's value as a recipe (YAML) writes it: ``null``, ``true``, ``[full, lora]``, ``0.0005``."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return "[" + ", ".join(shown_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {shown_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def recipe_option(model: type[BaseModel], path: str, *flags: str, section: str, help: str | None = None,
                  note: str = "", **kw: Any) -> Any:
    """A typer option for the setting at dotted ``path`` of the recipe section ``model`` (named ``section`` in a
    recipe) that the command applies only when it is given: its default is None, so a value from the recipe or
    ``--set`` (else the section's default) stands; the help is the field's description (``help`` replaces it,
    ``note`` is added after it) and shows the section's default as ``[default: (section.path: value)]``.
    ``flags`` default to ``--last-part-of-path`` (``--x/--no-x`` for a boolean)."""
    f, value = setting(model, path)
    if not f.description and help is None:
        raise TypeError(f"{model.__name__}.{path} has no description to use as an option's help")
    text = (help or f.description or "") + (f" {note}" if note else "")
    decls = flags or (_flag(path.rsplit(".", 1)[-1], f.annotation),)
    return typer.Option(None, *decls, help=text, show_default=f"{section}.{path}: {shown_value(value)}", **kw)


def settings_options(model: type[BaseModel], into: str, exclude: Iterable[str] = ()) -> Callable:
    """Decorator for a typer command: one option per field of ``model`` (but ``exclude``), added after the
    command's own parameters; the command is called with them as one instance of ``model`` in parameter ``into``
    (a value the model refuses is a :class:`kamado.config.KamadoError` naming the option)."""
    skip = set(exclude)
    names = [n for n in model.model_fields if n not in skip]

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != into]
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=model.model_fields[n].annotation,
                                   default=option(model, n)) for n in names]

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            from kamado.config import KamadoError, format_validation_error

            values = {n: kwargs.pop(n) for n in names}
            try:
                settings = model(**values)
            except ValidationError as e:
                raise KamadoError("invalid options\n" + format_validation_error(e)) from None
            return fn(*args, **kwargs, **{into: settings})

        command.__signature__ = sig.replace(parameters=[  # type: ignore[attr-defined]
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added)
        command.__annotations__ = {}  # typer reads every annotation from the signature above
        return command

    return deco
