"""A filter chain: its steps built from a chain config (:func:`build_steps`), the one step loop with per-step
accounting (:class:`Pipeline`: the clean job, the line-count pass, ``kamado corpus inspect --labelled`` and the
benchmarks all run documents through it), and re-deciding stored measurements (:func:`redecide`)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError

from kamado.config import ConfigError, KamadoError, format_validation_error
from kamado.corpus.config import ChainConfig
from kamado.corpus.io.documents import Document
from kamado.corpus.steps.base import REGISTRY, Analysis, Cleaner, Env, Filter, Step


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0]


class StepStats:
    """Counts for one step: documents in/out, rejections per reason, characters removed, time."""

    __slots__ = ("name", "type", "kind", "docs_in", "docs_out", "chars_in", "chars_removed", "seconds", "reasons",
                 "skipped")

    def __init__(self, name: str, type_: str, kind: str) -> None:
        self.name, self.type, self.kind = name, type_, kind
        self.docs_in = self.docs_out = self.chars_in = self.chars_removed = self.skipped = 0
        self.seconds = 0.0
        self.reasons: dict[str, int] = {}

    def to_json(self) -> dict:
        return {"name": self.name, "type": self.type, "kind": self.kind, "docs_in": self.docs_in,
                "docs_out": self.docs_out, "rejected": self.docs_in - self.docs_out,
                "skipped_by_lang": self.skipped, "chars_in": self.chars_in,
                "chars_removed": self.chars_removed, "seconds": round(self.seconds, 4),
                "reasons": dict(sorted(self.reasons.items()))}


def step_class(type_name: str) -> type[Step]:
    """The step class registered under ``type_name`` (built-in steps, then the model-based ones)."""
    import importlib

    from kamado.corpus.steps import cleaners, filters, rules  # noqa: F401  (register the built-in steps)

    if type_name not in REGISTRY:  # steps defined by the model-based modules register on import
        for mod in ("kamado.corpus.steps.quality", "kamado.corpus.steps.perplexity"):
            try:
                importlib.import_module(mod)
            except ImportError:
                pass
    if type_name not in REGISTRY:
        raise KamadoError(f"unknown step type {type_name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[type_name]


def build_steps(chain: ChainConfig, env: Env, upto: int | None = None) -> list[Step]:
    """Instantiate the chain's steps (validating each one's parameters)."""
    steps: list[Step] = []
    names: set[str] = set()
    for i, raw in enumerate(chain.steps[:upto]):
        spec = dict(raw)
        type_ = spec.pop("type", None)
        if not type_:
            raise ConfigError(f"chain {chain.name}: steps[{i}] has no 'type'")
        name = str(spec.pop("name", type_))
        if name in names:
            raise ConfigError(f"chain {chain.name}: steps[{i}]: duplicate step name {name!r} (give it a 'name')")
        names.add(name)
        cls = step_class(str(type_))
        try:
            params = cls.Params.model_validate(spec)
        except ValidationError as e:
            raise ConfigError(f"chain {chain.name}: invalid step {name!r}\n"
                              + format_validation_error(e, f"steps[{i}]")) from None
        steps.append(cls(name, params, env))
    return steps


def repeated_index(chain: ChainConfig) -> int | None:
    """Position of the corpus-wide ``repeated_lines`` step, if the chain has one."""
    for i, s in enumerate(chain.steps):
        if s.get("type") == "repeated_lines":
            return i
    return None


class Pipeline:
    """Run documents through a chain (or its first ``upto`` steps), keeping per-step statistics.

    :meth:`process` is the one step loop: the clean job, the line-count pass and the benchmarks all
    run documents through it.
    """

    def __init__(self, chain: ChainConfig, env: Env, upto: int | None = None,
                 steps: list[Step] | None = None) -> None:
        self.chain = chain
        self.steps = build_steps(chain, env, upto) if steps is None else steps
        self.store = chain.store_measures
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = [StepStats(s.name, getattr(s, "type_name", s.kind), s.kind) for s in self.steps]

    def process(self, doc: Document) -> tuple[Document, str | None, str | None]:
        """Returns ``(doc, rejected_by, reason)``; the doc's text is the cleaned text.

        A step with a ``lang`` parameter only sees documents of that language (the others pass it,
        counted as ``skipped_by_lang``); a filter measurement named ``lang`` (the language filter's)
        sets the document's language for the steps after it.
        """
        text = doc.text
        a: Analysis | None = None
        measures: dict[str, Any] = {}
        clock = time.perf_counter
        for step, st in zip(self.steps, self.stats, strict=True):
            if step.only_lang is not None and doc.lang != step.only_lang:
                st.skipped += 1
                st.docs_in += 1
                st.docs_out += 1
                continue
            t0 = clock()
            st.docs_in += 1
            n = len(text)
            st.chars_in += n
            if isinstance(step, Cleaner):
                new = step.rewrite(text)
                if new is not text and new != text:
                    st.chars_removed += n - len(new)
                    text = new
                    a = None
                st.docs_out += 1
                st.seconds += clock() - t0
                continue
            assert isinstance(step, Filter)
            if a is None:
                a = Analysis(text)
            m = step.measure(a, doc)
            if "lang" in m:
                doc.lang = str(m["lang"])
            measures[step.name] = m
            reason = step.decide(m)
            st.seconds += clock() - t0
            if reason is not None:
                st.chars_removed += n
                code = reason_code(reason)
                st.reasons[code] = st.reasons.get(code, 0) + 1
                doc.text = text
                if self.store and measures:
                    doc.meta = {**doc.meta, "measures": measures}
                return doc, step.name, reason
            st.docs_out += 1
        doc.text = text
        if self.store and measures:
            doc.meta = {**doc.meta, "measures": measures}
        return doc, None, None


def redecide(record: dict, chain: ChainConfig, env: Env | None = None,
             steps: list[Step] | None = None) -> tuple[str | None, str | None]:
    """Re-run only the *decide* half of a chain's filters on a record's stored measurements.

    Returns ``(rejected_by, reason)`` or ``(None, None)`` when the record passes every filter it has
    measurements for; lets thresholds be re-tuned on an output folder without recomputing anything.
    """
    if steps is None:
        steps = build_steps(chain, env or Env())  # pass ``steps`` when re-deciding many records
    measures = (record.get("meta") or {}).get("measures") or {}
    for step in steps:
        if isinstance(step, Filter) and step.name in measures:
            reason = step.decide(measures[step.name])
            if reason is not None:
                return step.name, reason
    return None, None
