"""MT-Bench-style LLM-as-a-judge over OpenAI-compatible endpoints (single-answer grading).

For every two-turn question the model under test answers turn 1, then turn 2 with turn 1 in the
conversation. A judge model grades each turn with the MT-Bench single-answer prompts (the Japanese ones
from the Japanese MT-Bench for turn 1 of Japanese questions, the original multi-turn prompts for turn 2;
math/reasoning/coding questions are graded against reference answers) and its "[[rating]]" is parsed.

Files in the output folder (FastChat's formats): ``answers.jsonl``, ``judgments.jsonl`` (score -1 when the
judge gave no parseable rating; such judgments are excluded from the averages) and ``scores.json``. A rerun
skips every answer and judgment already written, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.jsonl import read_jsonl

NEED_REF_CATS = {"math", "reasoning", "coding"}
# FastChat's generation temperatures per MT-Bench category
TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
               "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
QUESTION_SETS = {  # questions -> (judge prompts for turn 1, reference answers, language)
    "mt-bench-ja": ("mt-bench-ja-judge-prompts", "mt-bench-ja-reference", "ja"),
    "mt-bench-ja-full": ("mt-bench-ja-judge-prompts", "mt-bench-ja-reference", "ja"),
    "mt-bench-en": ("mt-bench-en-judge-prompts", "mt-bench-en-reference", "en"),
}
_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


class APIError(KamadoError):
    """An endpoint that answered with an error, or did not answer after the retries."""

    def __init__(self, msg: str, status: int | None = None) -> None:
        super().__init__(msg)
        self.status = status


def parse_rating(judgment: str) -> float:
    """The judge's rating from "[[8]]" (full-width brackets/digits accepted); -1 when absent or off-scale."""
    text = unicodedata.normalize("NFKC", judgment)
    m = _SCORE.search(text) or _SCORE_BACKUP.search(text)
    if not m:
        return -1
    try:
        r = float(m.group(1))
    except ValueError:
        return -1
    if not 1 <= r <= 10:
        return -1
    return int(r) if r.is_integer() else r


def base_url(url: str) -> str:
    """Normalise an OpenAI base URL: no trailing slash, ``/v1`` added when the URL has no path."""
    url = url.rstrip("/")
    if urllib.parse.urlparse(url).path in ("", "/"):
        url += "/v1"
    return url


class OpenAIClient:
    """Minimal OpenAI-compatible client (stdlib only) with retries and exponential backoff."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 300.0, retries: int = 5,
                 backoff: float = 1.0) -> None:
        self.url, self.api_key, self.timeout = base_url(url), api_key, timeout
        self.retries, self.backoff = retries, backoff

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
            wait = self.backoff * (2 ** attempt) * (0.5 + random.random())
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    return json.loads(r.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:500]
                last = APIError(f"{method} {self.url}{path}: HTTP {e.code}: {detail}", e.code)
                if e.code not in (408, 409, 429) and e.code < 500:
                    raise last from None
                ra = e.headers.get("Retry-After") if e.headers else None
                if ra:
                    try:
                        wait = max(wait, min(float(ra), 60.0))
                    except ValueError:
                        pass
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as e:
                last = APIError(f"{method} {self.url}{path}: {getattr(e, 'reason', e)}")
            if attempt < self.retries:
                time.sleep(min(wait, 60.0))
        raise APIError(f"{last} (gave up after {self.retries + 1} attempts)")

    def models(self) -> list[str]:
        """Ids of the models the endpoint serves."""
        return [m["id"] for m in self._request("GET", "/models").get("data", [])]

    def chat(self, model: str, messages: list[dict], *, temperature: float = 0.0, max_tokens: int = 1024) -> str:
        """The assistant's reply to ``messages``."""
        r = self._request("POST", "/chat/completions", {"model": model, "messages": messages,
                                                        "temperature": temperature, "max_tokens": max_tokens})
        try:
            return r["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise APIError(f"{self.url}/chat/completions: unexpected response {str(r)[:300]}") from None


@dataclass
class JudgeSettings:
    """Options of ``kamado judge``."""

    questions: str = "mt-bench-ja"
    model_url: str = "http://127.0.0.1:8000/v1"
    model: str | None = None
    judge_url: str = "https://api.openai.com/v1"
    judge_model: str = "gpt-4o"
    api_key_env: str = "OPENAI_API_KEY"
    model_api_key_env: str | None = None
    turns: list[int] = field(default_factory=lambda: [1, 2])
    limit: int | None = None
    max_tokens: int = 1024
    judge_max_tokens: int = 2048
    concurrency: int = 4
    retries: int = 5
    timeout: float = 300.0
    backoff: float = 1.0


def _jsonl(path: Path) -> list[dict]:
    """Records of a question / answer / judgement file; a line cut by an interruption is skipped (redone)."""
    return read_jsonl(path, skip_bad=True, missing_ok=True)


def load_question_set(name: str, root: Path | None) -> tuple[list[dict], dict[str, dict], dict[str, list[str]], str]:
    """Questions, judge prompts by name (turn-1 and multi-turn), reference answers by question id, language."""
    from kamado.registry import resolve

    qpath = resolve(name, root)
    questions = _jsonl(qpath)
    if not questions or "turns" not in questions[0]:
        raise KamadoError(f"{qpath}: expected MT-Bench questions (JSONL with question_id, category, turns)")
    prompts_name, ref_name, lang = QUESTION_SETS.get(name, (None, None, None))
    if lang is None:
        text = questions[0]["turns"][0]
        lang = "ja" if re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", text) else "en"
        prompts_name = "mt-bench-ja-judge-prompts" if lang == "ja" else "mt-bench-en-judge-prompts"
        ref_name = "mt-bench-ja-reference" if lang == "ja" else "mt-bench-en-reference"
    prompts = {p["name"]: p for p in _jsonl(resolve("mt-bench-en-judge-prompts", root))}
    if lang == "ja":  # Japanese single-answer prompts for turn 1; the original multi-turn ones for turn 2
        prompts.update({p["name"]: p for p in _jsonl(resolve(prompts_name, root))})
    refs = {str(r["question_id"]): r["choices"][0]["turns"] for r in _jsonl(resolve(ref_name, root))}
    return questions, prompts, refs, lang


def judge_prompt(q: dict, answers: list[str], turn: int, prompts: dict[str, dict],
                 refs: dict[str, list[str]]) -> tuple[str, str, str]:
    """(prompt name, system prompt, user prompt) for grading ``turn`` of question ``q``."""
    need_ref = q.get("category") in NEED_REF_CATS and str(q["question_id"]) in refs
    name = ("single-math-v1" if need_ref else "single-v1") + ("-multi-turn" if turn == 2 else "")
    p = prompts[name]
    ref = refs.get(str(q["question_id"]), ["", ""])
    kw: dict[str, str] = {}
    if turn == 1:
        kw = {"question": q["turns"][0], "answer": answers[0]}
        if need_ref:
            kw["ref_answer_1"] = ref[0]
    else:
        kw = {"question_1": q["turns"][0], "question_2": q["turns"][1], "answer_1": answers[0],
              "answer_2": answers[1]}
        if need_ref:
            kw.update(ref_answer_1=ref[0], ref_answer_2=ref[1] if len(ref) > 1 else "")
    return name, p["system_prompt"], p["prompt_template"].format(**kw)


class _Appender:
    """Thread-safe JSONL appender (one flushed line per record)."""

    def __init__(self, path: Path) -> None:
        self.path, self.lock = path, threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, rec: dict) -> None:
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()


def _pool(items: list[Any], fn: Callable[[Any], None], concurrency: int, desc: str, show: bool) -> list[str]:
    """Run ``fn`` over items with a concurrency limit; returns error messages (the others were written)."""
    from kamado.ui import progress

    errors: list[str] = []
    lock = threading.Lock()
    if not items:
        return errors
    with progress(desc, total=len(items)) if show else _null() as adv:
        def one(it: Any) -> None:
            try:
                fn(it)
            except KamadoError as e:
                with lock:
                    errors.append(str(e))
            finally:
                with lock:
                    adv(1)

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as ex:
            list(ex.map(one, items))
    return errors


class _null:
    def __enter__(self) -> Callable[..., None]:
        return lambda n=1, **kw: None

    def __exit__(self, *a: Any) -> None:
        return None


def run_judge(s: JudgeSettings, out: Path, root: Path | None, *, show_progress: bool = False) -> dict[str, Any]:
    """Answer, judge, aggregate; returns the ``scores.json`` summary."""
    questions, prompts, refs, lang = load_question_set(s.questions, root)
    if s.limit is not None:
        questions = questions[: s.limit]
    m_key = os.environ.get(s.model_api_key_env) if s.model_api_key_env else None
    j_key = os.environ.get(s.api_key_env) if s.api_key_env else None
    mc = OpenAIClient(s.model_url, m_key, timeout=s.timeout, retries=s.retries, backoff=s.backoff)
    jc = OpenAIClient(s.judge_url, j_key, timeout=s.timeout, retries=s.retries, backoff=s.backoff)
    model = s.model
    if not model:
        ids = mc.models()
        if not ids:
            raise KamadoError(f"{s.model_url}: /models lists no model; pass --model")
        model = ids[0]
    out.mkdir(parents=True, exist_ok=True)
    need = max(s.turns)

    # 1. answers (resumable: questions with enough turns are kept)
    ans_path = out / "answers.jsonl"
    answers: dict[str, list[str]] = {}
    for r in _jsonl(ans_path):
        if r.get("model_id") == model:
            t = r["choices"][0]["turns"]
            if len(t) >= len(answers.get(str(r["question_id"]), [])):
                answers[str(r["question_id"])] = t
    ans_w = _Appender(ans_path)

    def answer(q: dict) -> None:
        temp = TEMPERATURE.get(q.get("category", ""), 0.7)
        conv: list[dict] = []
        turns_out: list[str] = []
        for i, user in enumerate(q["turns"][:need]):
            conv.append({"role": "user", "content": user})
            prev = answers.get(str(q["question_id"]), [])
            reply = prev[i] if i < len(prev) else mc.chat(model, conv, temperature=temp, max_tokens=s.max_tokens)
            conv.append({"role": "assistant", "content": reply})
            turns_out.append(reply)
        answers[str(q["question_id"])] = turns_out
        ans_w.write({"question_id": q["question_id"], "answer_id": uuid.uuid4().hex, "model_id": model,
                     "category": q.get("category"), "choices": [{"index": 0, "turns": turns_out}],
                     "tstamp": time.time()})

    todo = [q for q in questions if len(answers.get(str(q["question_id"]), [])) < min(need, len(q["turns"]))]
    errors = _pool(todo, answer, s.concurrency, f"answers ({model})", show_progress)

    # 2. judgments (resumable by question, turn, model and judge)
    jpath = out / "judgments.jsonl"
    done: dict[tuple[str, int], dict] = {}
    for r in _jsonl(jpath):
        if r.get("model") == model and r.get("judge", [None])[0] == s.judge_model:
            done[(str(r["question_id"]), int(r["turn"]))] = r
    j_w = _Appender(jpath)

    def grade(item: tuple[dict, int]) -> None:
        q, turn = item
        name, system, user = judge_prompt(q, answers[str(q["question_id"])], turn, prompts, refs)
        text = jc.chat(s.judge_model, [{"role": "system", "content": system}, {"role": "user", "content": user}],
                       temperature=0.0, max_tokens=s.judge_max_tokens)
        rec = {"question_id": q["question_id"], "model": model, "judge": [s.judge_model, name],
               "category": q.get("category"), "user_prompt": user, "judgment": text, "score": parse_rating(text),
               "turn": turn, "tstamp": time.time()}
        done[(str(q["question_id"]), turn)] = rec
        j_w.write(rec)

    items = [(q, t) for q in questions for t in s.turns
             if t <= len(q["turns"]) and len(answers.get(str(q["question_id"]), [])) >= t
             and (str(q["question_id"]), t) not in done]
    errors += _pool(items, grade, s.concurrency, f"judge ({s.judge_model})", show_progress)

    summary = summarize(questions, done, s.turns, model=model, judge=s.judge_model, lang=lang)
    summary["errors"] = len(errors)
    from kamado.manifest import write_json_atomic

    write_json_atomic(out / "scores.json", summary)
    if errors:
        raise KamadoError(f"{len(errors)} request(s) failed (first: {errors[0]}); rerun the same command to "
                          f"resume — finished answers and judgments are kept in {out}")
    return summary


def summarize(questions: list[dict], judgments: dict[tuple[str, int], dict], turns: list[int], *, model: str,
              judge: str, lang: str) -> dict[str, Any]:
    """Mean score per category and turn (invalid ratings excluded)."""
    cat_of = {str(q["question_id"]): q.get("category", "?") for q in questions}
    per: dict[str, dict[int, list[float]]] = {}
    invalid = 0
    for (qid, turn), r in judgments.items():
        if qid not in cat_of:
            continue
        if r["score"] == -1:
            invalid += 1
            continue
        per.setdefault(cat_of[qid], {}).setdefault(turn, []).append(float(r["score"]))

    def mean(xs: list[float]) -> float | None:
        return round(sum(xs) / len(xs), 4) if xs else None

    cats = {}
    for cat in sorted(per):
        row: dict[str, Any] = {f"turn{t}": mean(per[cat].get(t, [])) for t in turns}
        allv = [x for t in turns for x in per[cat].get(t, [])]
        row.update(score=mean(allv), n=len(allv))
        cats[cat] = row
    overall = {f"turn{t}": mean([x for c in per.values() for x in c.get(t, [])]) for t in turns}
    allv = [x for c in per.values() for t in turns for x in c.get(t, [])]
    return {"model": model, "judge": judge, "lang": lang, "questions": len(questions), "turns": turns,
            "categories": cats, **overall, "score": mean(allv), "n": len(allv), "invalid": invalid}


def score_table(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the per-category score table."""
    turns = summary["turns"]
    cols = ["category", *[f"turn {t}" for t in turns], "mean", "n"]

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.2f}"

    rows = [[c, *[f(r.get(f"turn{t}")) for t in turns], f(r["score"]), r["n"]]
            for c, r in summary["categories"].items()]
    rows.append(["overall", *[f(summary.get(f"turn{t}")) for t in turns], f(summary["score"]), summary["n"]])
    return cols, rows
