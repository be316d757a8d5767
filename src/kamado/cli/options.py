"""Command-line options made from config fields: the default and the help of an option are those of the field
(``Field(default, description=...)``), declared once in the config model.

- :func:`option`: one field as a typer option, in the default style (``workers: int = option(CorpusConfig, "workers")``).
- :func:`settings_options`: every field of a settings model as an option (``--name``, ``--flag/--no-flag`` for
  booleans); the command receives them as one validated model instance.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import typer
from pydantic import BaseModel, ValidationError


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
           **kw: Any) -> Any:
    """A typer option for field ``name`` of ``model``: its default and help (``help`` overrides the text only,
    ``default`` the default: for a command whose default differs from the config's on purpose); ``flags`` default
    to ``--field-name`` (``--x/--no-x`` for a boolean)."""
    f = model.model_fields[name]
    decls = flags or (_flag(name, f.annotation),)
    value = field_default(model, name) if default is ... else default
    return typer.Option(value, *decls, help=help or field_help(model, name), **kw)


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
