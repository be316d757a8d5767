"""MT-Bench-style LLM-as-a-judge over OpenAI-compatible endpoints (single-answer grading), FastChat's requests.

For every two-turn question the model under test answers turn 1, then turn 2 with turn 1 in the
conversation (or the answers come from a FastChat ``model_answer`` file, ``answers_file``). A judge model grades
each turn with the MT-Bench single-answer prompts (the Japanese ones from the Japanese MT-Bench for turn 1 of
Japanese questions, the original multi-turn prompts for turn 2; math/reasoning/coding questions are graded
against reference answers) and its "[[rating]]" is parsed.

The judge request is built as FastChat's ``run_judge_single`` builds it (:func:`judge_request`): the template's
``system_prompt`` as the system message, its ``prompt_template`` filled with the question, the answer and, for the
categories FastChat grades against a reference (``NEED_REF_CATS``), the reference answer(s), as the one user
message; temperature 0, 2,048 tokens. ``judge_prompts="fastchat-2023-08"`` drops the language-match sentence that
FastChat's Japanese templates gained after its published GPT-4 judgments of August 2023 were made.

Files in the output folder (FastChat's formats): ``answers.jsonl``, ``judgments.jsonl`` (score -1 when the
judge gave no parseable rating, and for a failed judgment: a reply that was no usable text, with ``error``;
such judgments are left out of the averages and counted in ``parse_failure_share``) and ``scores.json``, written
whatever happened. A rerun skips every answer and judgment already written with the same request (failed ones
are asked again), so an interrupted run resumes where it stopped; with a reply cache (``cache_dir``, keyed on
the SHA-256 of the whole request) judging unchanged answers again sends nothing. ``samples`` > 1 asks the judge
k times per judgment (the score is the median; ``spread`` = max - min). ``dry_run`` writes ``requests.jsonl``
and sends nothing.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import statistics
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import Field

from kamado.config import KamadoError, StrictModel
from kamado.jsonl import read_jsonl, read_records
from kamado.manifest import write_json_atomic

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
# the sentence FastChat's Japanese judge templates gained after August 2023 (the answer's language must match)
LANG_RULE_JA = "AIアシスタントの返答の言語は、ユーザーが使用している言語と一致しているべきで、そうでない場合は減点されるべきです。"
JUDGE_PROMPTS = ("fastchat", "fastchat-2023-08")


class APIError(KamadoError):
    """An endpoint that answered with an error, gave an unusable reply, or did not answer after the retries.

    ``reply`` is True when an answer came back whole but was no usable text (not JSON in UTF-8, no
    ``choices[0].message.content`` string): a failed judgment, not a failed connection.
    """

    def __init__(self, msg: str, status: int | None = None, *, reply: bool = False) -> None:
        super().__init__(msg)
        self.status, self.reply = status, reply


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
        last: APIError | None = None
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
            wait = self.backoff * (2 ** attempt) * (0.5 + random.random())
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    raw = r.read()
                try:  # a whole reply that is not JSON in UTF-8: asked again (a proxy may have mangled it)
                    return json.loads(raw.decode("utf-8"))
                except ValueError as e:
                    last = APIError(f"{method} {self.url}{path}: reply is not JSON in UTF-8 ({e}): "
                                    f"{raw[:200]!r}", reply=True)
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
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
                # refused, reset, timed out, cut short (IncompleteRead): asked again
                reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
                last = APIError(f"{method} {self.url}{path}: {reason}")
            if attempt < self.retries:
                time.sleep(min(wait, 60.0))
        assert last is not None
        raise APIError(f"{last} (gave up after {self.retries + 1} attempts)", last.status, reply=last.reply)

    def models(self) -> list[str]:
        """Ids of the models the endpoint serves."""
        return [m["id"] for m in self._request("GET", "/models").get("data", [])]

    def chat(self, model: str, messages: list[dict], *, temperature: float = 0.0, max_tokens: int = 1024) -> str:
        """The assistant's reply to ``messages``."""
        return self.complete({"model": model, "messages": messages, "temperature": temperature,
                              "max_tokens": max_tokens})

    def complete(self, body: dict) -> str:
        """The text of ``choices[0].message.content`` for a chat-completions request body; an unusable reply
        (no such string) is an :class:`APIError` with ``reply=True``."""
        r = self._request("POST", "/chat/completions", body)
        try:
            content = r["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise APIError(f"{self.url}/chat/completions: unexpected response {str(r)[:300]}", reply=True) from None
        if content is None:
            return ""
        if not isinstance(content, str):
            raise APIError(f"{self.url}/chat/completions: message content is {type(content).__name__}, not text: "
                           f"{str(content)[:100]}", reply=True)
        return content


class JudgeSettings(StrictModel):
    """Options of ``kamado judge`` (the command's defaults and help are these fields')."""

    questions: str = Field("mt-bench-ja", description="mt-bench-ja (60), mt-bench-ja-full (80), mt-bench-en, "
                           "or a JSONL file.")
    model_url: str | None = Field(None, description="OpenAI-compatible base URL of the model under test, e.g. "
                                  "http://127.0.0.1:8000/v1 (not with --answers).")
    model: str | None = Field(None, description="Model name at --model-url (default: the first of its "
                              "/v1/models; with --answers: its model_id).")
    judge_url: str = Field("https://api.openai.com/v1", description="OpenAI-compatible base URL of the judge.")
    judge_model: str = Field("gpt-4", description="Judge model name (FastChat's default: gpt-4).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the judge's API key.")
    model_api_key_env: str | None = Field(None, description="Environment variable with the model endpoint's key, "
                                          "if it needs one.")
    turns: list[int] = Field([1, 2], description="Turns to judge: 1, 2 or 1,2.")
    limit: int | None = Field(None, description="First N questions only.")
    max_tokens: int = Field(1024, description="Answer length limit (tokens).")
    judge_max_tokens: int = Field(2048, description="Judge reply length limit (tokens; FastChat's 2,048).")
    judge_temperature: float = Field(0.0, description="Judge sampling temperature (FastChat: 0).")
    concurrency: int = Field(4, description="Requests in flight at once.")
    retries: int = Field(5, description="Retries per request (exponential backoff).")
    timeout: float = Field(300.0, description="Seconds per HTTP request.")
    backoff: float = Field(1.0, description="Base of the exponential backoff between retries (seconds).")
    answers_file: Path | None = Field(None, description="Judge the answers of a FastChat model_answer JSONL "
                                      "instead of asking a model.")
    judge_prompts: str = Field("fastchat", description="fastchat (the data root's templates) or fastchat-2023-08 "
                               "(without the language-match sentence, as FastChat's GPT-4 judgments of August "
                               "2023).")
    samples: int = Field(1, description="Judge replies per judgment: the score is their median, spread = max - "
                         "min.")
    cache_dir: Path | None = Field(None, description="Folder of judge replies by request digest; None: no cache.")
    dry_run: bool = Field(False, description="Write OUT/requests.jsonl (question_id, turn, system_prompt, "
                          "user_prompt, request) and send nothing.")


def load_question_set(name: str, root: Path | None, judge_prompts: str = "fastchat"
                      ) -> tuple[list[dict], dict[str, dict], dict[str, list[str]], str]:
    """Questions, judge prompts by name (turn-1 and multi-turn), reference answers by question id, language."""
    from kamado.catalog import resolve

    if judge_prompts not in JUDGE_PROMPTS:
        raise KamadoError(f"judge prompts {judge_prompts!r}: expected one of {', '.join(JUDGE_PROMPTS)}")
    qpath = resolve(name, root)
    questions = read_records(qpath)
    if not questions or "turns" not in questions[0]:
        raise KamadoError(f"{qpath}: expected MT-Bench questions (JSONL with question_id, category, turns)")
    prompts_name, ref_name, lang = QUESTION_SETS.get(name, (None, None, None))
    if lang is None:
        text = questions[0]["turns"][0]
        lang = "ja" if re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", text) else "en"
        prompts_name = "mt-bench-ja-judge-prompts" if lang == "ja" else "mt-bench-en-judge-prompts"
        ref_name = "mt-bench-ja-reference" if lang == "ja" else "mt-bench-en-reference"
    prompts = {p["name"]: p for p in read_records(resolve("mt-bench-en-judge-prompts", root))}
    if lang == "ja":  # Japanese single-answer prompts for turn 1; the original multi-turn ones for turn 2
        ja_path = resolve(prompts_name, root)
        ja = {p["name"]: dict(p) for p in read_records(ja_path)}
        if judge_prompts == "fastchat-2023-08":
            for p in ja.values():
                if LANG_RULE_JA not in p["prompt_template"]:
                    raise KamadoError(f"{ja_path}: judge prompt {p['name']} lacks the language-match sentence "
                                      "that judge_prompts fastchat-2023-08 removes")
                p["prompt_template"] = p["prompt_template"].replace(LANG_RULE_JA, "")
        prompts.update(ja)
    refs = {str(r["question_id"]): r["choices"][0]["turns"] for r in read_records(resolve(ref_name, root))}
    return questions, prompts, refs, lang


def judge_prompt(q: dict, answers: list[str], turn: int, prompts: dict[str, dict],
                 refs: dict[str, list[str]]) -> tuple[str, str, str]:
    """(prompt name, system prompt, user prompt) for grading ``turn`` of question ``q``, as FastChat's
    ``run_judge_single`` fills them: reference answers only for ``NEED_REF_CATS`` questions that have one."""
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


def judge_request(q: dict, answers: list[str], turn: int, prompts: dict[str, dict], refs: dict[str, list[str]],
                  *, judge_model: str, temperature: float = 0.0, max_tokens: int = 2048) -> dict[str, Any]:
    """The chat-completions request FastChat sends to grade ``turn`` of ``q``: ``{"prompt", "system_prompt",
    "user_prompt", "body"}`` (body: model, messages = system + user as FastChat's ``to_openai_api_messages``,
    temperature, max_tokens)."""
    name, system, user = judge_prompt(q, answers, turn, prompts, refs)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return {"prompt": name, "system_prompt": system, "user_prompt": user,
            "body": {"model": judge_model, "messages": messages, "temperature": temperature,
                     "max_tokens": max_tokens}}


def load_answers(path: Path) -> tuple[str, dict[str, list[str]], dict[str, Any]]:
    """A FastChat ``model_answer`` file: (model id, answer turns by question id, question ids as the file
    writes them)."""
    rows = read_jsonl(path)
    models = {str(r.get("model_id")) for r in rows}
    if not rows or len(models) != 1:
        raise KamadoError(f"{path}: expected the answers of one model (FastChat model_answer JSONL with "
                          f"question_id, model_id, choices); found models {sorted(models) or 'none'}")
    answers: dict[str, list[str]] = {}
    ids: dict[str, Any] = {}
    for i, r in enumerate(rows, 1):
        try:
            turns = r["choices"][0]["turns"]
            qid = r["question_id"]
        except (KeyError, IndexError, TypeError):
            raise KamadoError(f"{path}:{i}: expected question_id and choices[0].turns") from None
        if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
            raise KamadoError(f"{path}:{i}: choices[0].turns must be a list of strings")
        answers[str(qid)], ids[str(qid)] = turns, qid
    return models.pop(), answers, ids


class ReplyCache:
    """Judge replies by the SHA-256 of the whole request (endpoint, body, sample index): one JSON file each,
    written atomically; a reply that was not usable text is never stored."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.hits = self.misses = 0
        self.lock = threading.Lock()

    @staticmethod
    def key(url: str, body: dict, sample: int) -> str:
        blob = json.dumps({"url": url, "body": body, "sample": sample}, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.json"

    def has(self, key: str) -> bool:
        return self.folder is not None and self._path(key).is_file()

    def get(self, key: str) -> str | None:
        text = None
        if self.folder is not None:
            try:
                text = json.loads(self._path(key).read_text(encoding="utf-8")).get("content")
            except (OSError, ValueError, AttributeError):
                text = None
        with self.lock:
            if isinstance(text, str):
                self.hits += 1
                return text
            self.misses += 1
        return None

    def put(self, key: str, body: dict, content: str) -> None:
        if self.folder is None:
            return
        write_json_atomic(self._path(key), {"request": body, "content": content})


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


def _median_score(scores: list[float]) -> float:
    """The median of the parseable ratings (-1 when there is none); an integer stays an integer."""
    valid = [x for x in scores if x != -1]
    if not valid:
        return -1
    m = statistics.median(valid)
    return int(m) if float(m).is_integer() else m


_Request = tuple[dict, int, dict]  # (question, turn, judge_request(...))


def run_judge(s: JudgeSettings, out: Path, root: Path | None, *, show_progress: bool = False) -> dict[str, Any]:
    """Answer, judge, aggregate; returns the ``scores.json`` summary (``dry_run``: the requests summary)."""
    if s.samples < 1:
        raise KamadoError(f"samples {s.samples}: expected at least 1")
    questions, prompts, refs, lang = load_question_set(s.questions, root, s.judge_prompts)
    if s.limit is not None:
        questions = questions[: s.limit]
    out.mkdir(parents=True, exist_ok=True)
    ids = {str(q["question_id"]): q["question_id"] for q in questions}
    model, answers, errors = _collect_answers(s, questions, ids, out, show_progress)
    cache = ReplyCache(s.cache_dir)
    reqs = _judge_requests(s, questions, answers, prompts, refs)
    if s.dry_run:
        return _write_requests(s, reqs, cache, out, model=model, ids=ids, questions=len(questions))
    return _judge_and_summarize(s, reqs, cache, out, questions=questions, ids=ids, model=model, answers=answers,
                                lang=lang, errors=errors, show_progress=show_progress)


def _collect_answers(s: JudgeSettings, questions: list[dict], ids: dict[str, Any], out: Path, show_progress: bool
                     ) -> tuple[str, dict[str, list[str]], list[str]]:
    """Phase 1, the answers: (model, answer turns by question id, error messages). From a FastChat answer file
    (``ids`` then take its question ids), else from ``answers.jsonl`` (resumable) and the model for the rest."""
    if s.answers_file is not None:
        model, answers, file_ids = load_answers(s.answers_file)
        ids |= {k: v for k, v in file_ids.items() if k in ids}  # records keep the answer file's question ids
        return s.model or model, answers, []
    ans_path = out / "answers.jsonl"
    model = s.model or ""
    if not model and not s.dry_run:
        if not s.model_url:
            raise KamadoError("no model to judge: pass --model-url (and --model) or --answers FILE")
        m_key = os.environ.get(s.model_api_key_env) if s.model_api_key_env else None
        ids_at = OpenAIClient(s.model_url, m_key, timeout=s.timeout, retries=s.retries, backoff=s.backoff).models()
        if not ids_at:
            raise KamadoError(f"{s.model_url}: /models lists no model; pass --model")
        model = ids_at[0]
    answers: dict[str, list[str]] = {}
    for r in read_records(ans_path):
        if not model:
            model = str(r.get("model_id"))
        if r.get("model_id") == model:
            t = r["choices"][0]["turns"]
            if len(t) >= len(answers.get(str(r["question_id"]), [])):
                answers[str(r["question_id"])] = t
    need = max(s.turns)
    todo = [q for q in questions if len(answers.get(str(q["question_id"]), [])) < min(need, len(q["turns"]))]
    if todo and s.dry_run:
        raise KamadoError(f"--dry-run: {len(todo)} question(s) have no answer in {ans_path}; pass --answers FILE "
                          "(FastChat model_answer JSONL) or answer them first")
    if not todo:
        return model, answers, []
    if not s.model_url:
        raise KamadoError("no model to answer the questions: pass --model-url or --answers FILE")
    return model, answers, _ask_model(s, todo, answers, model, ans_path, show_progress)


def _ask_model(s: JudgeSettings, todo: list[dict], answers: dict[str, list[str]], model: str, ans_path: Path,
               show_progress: bool) -> list[str]:
    """Ask ``model`` at ``s.model_url`` the first ``max(s.turns)`` turns of each ``todo`` question (turns already
    in ``answers`` are kept), at FastChat's temperature for its category; each answered question goes to
    ``answers`` and a line of ``ans_path``. Returns the error messages."""
    need = max(s.turns)
    m_key = os.environ.get(s.model_api_key_env) if s.model_api_key_env else None
    mc = OpenAIClient(s.model_url or "", m_key, timeout=s.timeout, retries=s.retries, backoff=s.backoff)
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

    return _pool(todo, answer, s.concurrency, f"answers ({model})", show_progress)


def _judge_requests(s: JudgeSettings, questions: list[dict], answers: dict[str, list[str]],
                    prompts: dict[str, dict], refs: dict[str, list[str]]) -> list[_Request]:
    """Phase 2, FastChat's judge requests: one per question and turn of ``s.turns`` that has an answer."""
    reqs: list[_Request] = []
    for q in questions:
        got = answers.get(str(q["question_id"]), [])
        for t in s.turns:
            if t <= len(q["turns"]) and len(got) >= t:
                reqs.append((q, t, judge_request(q, got, t, prompts, refs, judge_model=s.judge_model,
                                                 temperature=s.judge_temperature, max_tokens=s.judge_max_tokens)))
    return reqs


def _write_requests(s: JudgeSettings, reqs: list[_Request], cache: ReplyCache, out: Path, *, model: str,
                    ids: dict[str, Any], questions: int) -> dict[str, Any]:
    """The dry run: ``requests.jsonl`` (each request, and whether all its samples are cached) and its summary."""
    with open(out / "requests.jsonl", "w", encoding="utf-8") as f:
        cached = 0
        for q, t, r in reqs:
            hit = all(cache.has(cache.key(base_url(s.judge_url), r["body"], i)) for i in range(s.samples))
            cached += hit
            f.write(json.dumps({"question_id": ids[str(q["question_id"])], "turn": t, "model": model,
                                "judge": [s.judge_model, r["prompt"]], "category": q.get("category"),
                                "system_prompt": r["system_prompt"], "user_prompt": r["user_prompt"],
                                "request": r["body"], "cached": hit}, ensure_ascii=False) + "\n")
    return {"model": model, "judge": s.judge_model, "requests": len(reqs), "cached": cached,
            "to_send": (len(reqs) - cached) * s.samples, "questions": questions, "turns": s.turns}


def _judge_and_summarize(s: JudgeSettings, reqs: list[_Request], cache: ReplyCache, out: Path, *,
                         questions: list[dict], ids: dict[str, Any], model: str, answers: dict[str, list[str]],
                         lang: str, errors: list[str], show_progress: bool) -> dict[str, Any]:
    """Phase 3, the judgments (resumable: one already in ``judgments.jsonl`` for the same request is kept unless
    it failed) and ``scores.json``, written whatever happened; a failed request (here or in ``errors``, those of
    the answers) is a :class:`KamadoError` after it."""
    jpath = out / "judgments.jsonl"
    done: dict[tuple[str, int], dict] = {}
    for r in read_records(jpath):
        if r.get("model") == model and r.get("judge", [None])[0] == s.judge_model:
            done[(str(r["question_id"]), int(r["turn"]))] = r
    j_w = _Appender(jpath)
    jc = OpenAIClient(s.judge_url, os.environ.get(s.api_key_env) if s.api_key_env else None, timeout=s.timeout,
                      retries=s.retries, backoff=s.backoff)

    def grade(item: _Request) -> None:
        q, turn = item[0], item[1]
        rec, lost = _grade(s, jc, cache, item, model=model, answer=answers[str(q["question_id"])][turn - 1],
                           qid=ids[str(q["question_id"])])
        done[(str(q["question_id"]), turn)] = rec
        j_w.write(rec)
        if lost is not None:
            raise lost

    items = []
    for q, t, r in reqs:
        prev = done.get((str(q["question_id"]), t))
        if prev is None or "error" in prev or prev.get("user_prompt") != r["user_prompt"] \
                or prev.get("samples", 1) != s.samples:
            items.append((q, t, r))
    try:
        errors = errors + _pool(items, grade, s.concurrency, f"judge ({s.judge_model})", show_progress)
    finally:  # scores.json whatever happened (an interrupted run writes what it has)
        summary = summarize(questions, done, s.turns, model=model, judge=s.judge_model, lang=lang,
                            answers=answers)
        summary |= {"errors": len(errors), "judge_prompts": s.judge_prompts, "samples": s.samples,
                    "cache": {"hits": cache.hits, "misses": cache.misses} if s.cache_dir else None}
        write_json_atomic(out / "scores.json", summary)
    if errors:
        raise KamadoError(f"{len(errors)} request(s) failed (first: {errors[0]}); rerun the same command to "
                          f"resume — finished answers and judgments are kept in {out}")
    return summary


def _grade(s: JudgeSettings, jc: OpenAIClient, cache: ReplyCache, item: _Request, *, model: str, answer: str,
           qid: Any) -> tuple[dict[str, Any], APIError | None]:
    """One judgment: ``s.samples`` judge replies (from the cache, else asked), its ``judgments.jsonl`` record and
    the connection error to raise after writing it when no reply came (an unusable reply is no such error)."""
    from kamado.corpus.docs import ja_share

    q, turn, r = item
    texts: list[str] = []
    scores: list[float] = []
    problems: list[str] = []
    lost: APIError | None = None
    for i in range(s.samples):
        key = cache.key(jc.url, r["body"], i)
        text = cache.get(key)
        if text is None:
            try:
                text = jc.complete(r["body"])
            except APIError as e:
                problems.append(str(e))
                lost = lost or (None if e.reply else e)
                continue
            cache.put(key, r["body"], text)
        texts.append(text)
        scores.append(parse_rating(text))
    rec = {"question_id": qid, "model": model, "judge": [s.judge_model, r["prompt"]], "category": q.get("category"),
           "user_prompt": r["user_prompt"], "judgment": texts[0] if texts else "", "score": _median_score(scores),
           "turn": turn, "tstamp": time.time(), "answer_ja_share": ja_share(answer)}
    if s.samples > 1:
        valid = [x for x in scores if x != -1]
        rec |= {"samples": s.samples, "scores": scores, "judgments": texts,
                "spread": (max(valid) - min(valid)) if valid else None}
    if not texts:  # no usable reply at all: a failed judgment (asked again by the next run)
        rec["error"] = problems[0]
    return rec, (lost if not texts else None)


def summarize(questions: list[dict], judgments: dict[tuple[str, int], dict], turns: list[int], *, model: str,
              judge: str, lang: str, answers: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Mean score per category and turn (unusable judgments excluded and counted), the share of judgments
    that gave no rating, and how much of each answer is written in Japanese."""
    from kamado.corpus.docs import ja_share

    cat_of = {str(q["question_id"]): q.get("category", "?") for q in questions}
    per: dict[str, dict[int, list[float]]] = {}
    spreads: list[float] = []
    invalid = failed = judged = 0
    for (qid, turn), r in judgments.items():
        if qid not in cat_of or turn not in turns:
            continue
        judged += 1
        failed += "error" in r
        if r["score"] == -1:
            invalid += 1
            continue
        per.setdefault(cat_of[qid], {}).setdefault(turn, []).append(float(r["score"]))
        if r.get("spread") is not None:
            spreads.append(float(r["spread"]))

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
    out: dict[str, Any] = {
        "model": model, "judge": judge, "lang": lang, "questions": len(questions), "turns": turns,
        "categories": cats, **overall, "score": mean(allv), "n": len(allv), "judged": judged,
        "invalid": invalid, "failed": failed,
        "parse_failure_share": round(invalid / judged, 4) if judged else None,
        "spread_mean": mean(spreads)}
    if answers is not None:  # answers that should be Japanese but are not (the score alone hides it)
        shares = [x for q in questions for t in turns
                  if t <= len(answers.get(str(q["question_id"]), []))
                  for x in [ja_share(answers[str(q["question_id"])][t - 1])] if x is not None]
        out["ja_share"] = mean(shares)
        out["answers_mostly_not_japanese"] = sum(1 for x in shares if x < 0.5)
        out["answers_with_text"] = len(shares)
    return out


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
