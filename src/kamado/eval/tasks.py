"""The evaluation tasks (``TASKS``) and suites (``SUITES``): real evaluation sets from the data root and their prompts.

Multiple-choice tasks are scored by log-likelihood of each choice (``acc``) and by log-likelihood per
character of the choice (``acc_norm``, as lm-eval does). Japanese tasks (JGLUE) use Japanese prompts with
k-shot examples drawn from the train split when the data root has one (else from the same split, never the
example itself). The evaluated subset (``limit``) and kamado's few-shot examples are sampled deterministically
from the seed.

Two prompt sets (``prompts`` in the recipe's eval section, ``--prompts`` on the CLI):

- ``kamado``: the Japanese prompts above; English tasks exactly as lm-eval 0.4.13's own task definitions
  (ARC, HellaSwag with lm-eval's ``preprocess``, TruthfulQA MC1/MC2), few-shot examples by lm-eval's sampler.
- ``leaderboard``: JCommonsenseQA, JNLI and JSQuAD as lm-eval's ``japanese_leaderboard`` tasks (the
  Alpaca-style Japanese instruction prompt, 3/3/2 shots, ``"\n"`` target delimiter, JSQuAD until ``"\n\n"``
  and strict exact match on the first answer), few-shot examples drawn like lm-eval's default sampler: one
  ``random.Random(1234)`` per task, advanced document by document in file order, so every item gets the
  demonstrations a full lm-eval run would give it, whatever ``limit`` selects. Where the data root lacks the
  train split (JNLI, JSQuAD here) the demonstrations come from the evaluated split without the item itself
  (lm-eval's behaviour when the few-shot split is the evaluated one). ``aio`` gets the leaderboard's JAQKET prompt
  without passages (1 shot).

Tasks that exist only in a leaderboard's form are the same in both sets: ``mgsm-ja`` and ``xwinograd-ja`` are
lm-eval 0.4.13's ``ja_leaderboard_mgsm`` (5-shot chain of thought from the 8 exemplars by lm-eval's sampler, until
``"\n\n"``, 256 new tokens, the last number of the completion against the answer) and
``ja_leaderboard_xwinograd`` (the log-likelihood of each whole sentence after BOS; the higher one wins).

``aio``: closed-book open-domain QA on the AI王 questions (JAQKET v2's development questions; the passages of
lm-eval's reading-comprehension JAQKET are not available offline): greedy answer, exact match after the
organisers' normalisation and character F1; demonstrations from the AI王 1 development questions by seed.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kamado.config import KamadoError
from kamado.eval import metrics as M
from kamado.jsonl import read_jsonl

Kind = Literal["mc", "truthfulqa", "regression", "generation", "perplexity", "instruct"]

# lm-eval's TruthfulQA prompt (Lin et al. 2021): six fixed QA pairs
TRUTHFULQA_PROMPT = (
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain."
)

JNLI_LABELS = {"entailment": "含意", "contradiction": "矛盾", "neutral": "中立"}
# the Alpaca-style Japanese preamble of lm-eval's japanese_leaderboard tasks
LEADERBOARD_DESCRIPTION = "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n"


@dataclass
class Example:
    """One evaluation item with its full prompt."""

    id: str
    context: str  # prompt (few-shot demonstrations + query)
    query: str  # the query alone (for detail files)
    choices: list[str] = field(default_factory=list)
    gold: Any = None  # index (mc), list of true indices (mc2), float (regression), answers (generation)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """A task: where its data is, how one document becomes a prompt, and how it is scored."""

    name: str
    lang: str
    kind: Kind
    dataset: str | None = None  # catalog name of the evaluated split
    fewshot_dataset: str | None = None  # catalog name of the train split (few-shot pool)
    shots: int = 0
    description: str = ""
    load: Callable[[Path], list[dict]] | None = None
    query: Callable[[dict], str] | None = None
    choices: Callable[[dict], list[str]] | None = None
    gold: Callable[[dict], Any] | None = None
    answer: Callable[[dict], str] | None = None  # the text of the right answer, for demonstrations
    doc_id: Callable[[dict, int], str] | None = None
    group: Callable[[dict], str] | None = None  # demonstrations never share a group with the query
    stop: tuple[str, ...] = ("\n",)
    separator: str = "\n\n"
    target_delimiter: str = ""  # prefix of every choice (acc_norm counts the characters after it, as lm-eval)
    sampler: Literal["kamado", "lm-eval"] = "kamado"  # how few-shot examples are drawn (see the module doc)
    strict_em: bool = False  # generation: lm-eval's exact match (stripped, first answer) instead of JSQuAD's
    # generation: per-item scores of (completion, gold) instead of JSQuAD's; the keys in ``metrics`` are
    # averaged, the others go to the details
    score: Callable[[str, Any], dict[str, Any]] | None = None
    metrics: tuple[str, ...] = ()  # the metrics reported (empty: those of the task's kind)
    max_new_tokens: int | None = None  # generation length of the task's own definition (else eval.max_new_tokens)
    part: tuple[int, int] = (0, 1)  # instruct: part i of k of the held-out records (contiguous, in file order)


def _resolve(name: str, root: Path | None) -> Path:
    from kamado.catalog import resolve

    return resolve(name, root)


# --- JGLUE -------------------------------------------------------------------------------------------

def _jcqa_choices(d: dict) -> list[str]:
    return [d[f"choice{i}"] for i in range(5)]


def _jcqa_query(d: dict) -> str:
    return f"質問：{d['question']}\n選択肢：{'、'.join(_jcqa_choices(d))}\n答え："


def _jnli_query(d: dict) -> str:
    return f"前提：{d['sentence1']}\n仮説：{d['sentence2']}\n関係（含意・矛盾・中立）："


def _jsts_query(d: dict) -> str:
    return f"文1：{d['sentence1']}\n文2：{d['sentence2']}\n類似度（0〜5）："


def _jsquad_load(path: Path) -> list[dict]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    docs = []
    for art in data:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                if qa.get("is_impossible"):
                    continue
                docs.append({"id": qa["id"], "title": art["title"], "context": para["context"],
                             "question": qa["question"], "answers": [a["text"] for a in qa["answers"]]})
    return docs


def _jsquad_query(d: dict) -> str:
    ctx = d["context"].split(" [SEP] ", 1)[-1]
    return f"文脈：{ctx}\n質問：{d['question']}\n答え："


# --- AI王 (JAQKET's questions), MGSM, XWinograd --------------------------------------------------------

def _read_tsv(path: Path, header: bool) -> list[list[str]]:
    """Rows of a tab-separated file (LF or CRLF lines; fields hold no tabs or newlines)."""
    lines = [x.rstrip("\r") for x in path.read_text(encoding="utf-8").split("\n")]
    rows = [x.split("\t") for x in lines[1 if header else 0:] if x]
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise KamadoError(f"{path}: rows of {sorted(widths)} fields; expected the same number on every line")
    return rows


def _aio_load(path: Path) -> list[dict]:
    """AI王 questions (``qid, competition, timestamp, section, number, original_question, original_answer,
    original_additional_info``)."""
    cols = ["qid", "competition", "timestamp", "section", "number", "question", "answer", "additional_info"]
    return [dict(zip(cols, r, strict=True)) for r in _read_tsv(path, header=True)]


def _aio_query(d: dict) -> str:
    return f"問題：{d['question']}\n答え："


def _lb_aio_query(d: dict) -> str:
    return f"### 指示：\n与えられた質問に答えてください。\n\n### 入力：\n質問：{d['question']}\n\n### 応答："


def _mgsm_load(path: Path) -> list[dict]:
    """MGSM problems (TSV: question, integer answer) or the exemplars (JSON ``{n: {q, a}}``) in
    juletxara/mgsm's layout: ``question``, ``answer`` (exemplars' worked answer), ``answer_number``."""
    if path.suffix == ".json":
        ex = json.loads(path.read_text(encoding="utf-8"))
        return [{"question": v["q"], "answer": v["a"], "answer_number": None} for v in ex.values()]
    return [{"question": q, "answer": None, "answer_number": int(a)} for q, a in _read_tsv(path, header=False)]


def _mgsm_query(d: dict) -> str:
    q = d["question"].replace("問題：", "")
    return f"### 指示：\n与えられた問題に対して、ステップごとに答えを導き出してください。\n\n### 入力：\n{q}\n\n### 応答："


def _xwinograd_load(path: Path) -> list[dict]:
    """XWinograd rows (lang, source, English, sentence, tokens, pronoun, candidates) as polm-stability/xwinograd-ja
    has them: ``sentence1``/``sentence2`` = the tokens with the pronoun's span replaced by candidate 1 / 2,
    ``answer`` = "1" or "2"."""
    docs = []
    for r in _read_tsv(path, header=False):
        toks, (_, (a, b), _), cands = json.loads(r[4]), json.loads(r[5]), json.loads(r[6])
        sents = ["".join(toks[:a]) + c[0] + "".join(toks[b:]) for c in cands]
        answer = next(i for i, c in enumerate(cands) if c[3]) + 1
        docs.append({"sentence": r[3], "sentence1": sents[0], "sentence2": sents[1], "answer": str(answer),
                     "english": r[2]})
    return docs


# --- English -----------------------------------------------------------------------------------------

def _arc_gold(d: dict) -> int:
    labels = d["choices"]["label"]
    return labels.index(d["answerKey"])


def hellaswag_preprocess(text: str) -> str:
    """lm-eval 0.4.13 ``tasks/hellaswag/utils.preprocess``, verbatim."""
    text = text.strip()
    # NOTE: Brackets are artifacts of the WikiHow dataset portion of HellaSwag.
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


_SENTENCE_END = re.compile(r"[.!?]\s+")


def hellaswag_ctx_ab(d: dict) -> tuple[str, str]:
    """``(ctx_a, ctx_b)`` of a HellaSwag record. The official file has both; a text dump with only ``ctx``
    (= ctx_a + " " + ctx_b) is split before its trailing lower-case fragment (ActivityNet's ctx_b, e.g. "the
    man"), else ctx_b is empty (WikiHow)."""
    if "ctx_a" in d:
        return d["ctx_a"], d.get("ctx_b", "")
    ctx = d["ctx"]
    ends = list(_SENTENCE_END.finditer(ctx))
    cut = ends[-1].end() if ends else 0
    tail = ctx[cut:]
    if tail and tail[0].islower():
        return ctx[:cut].rstrip(), tail
    return ctx, ""


def _hellaswag_query(d: dict) -> str:
    a, b = hellaswag_ctx_ab(d)
    return hellaswag_preprocess(d["activity_label"] + ": " + a + " " + b.capitalize())


def _tqa_load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


TASKS: dict[str, Task] = {}


def _add(t: Task) -> None:
    TASKS[t.name] = t


_add(Task(
    "jcommonsenseqa", "ja", "mc", "jcommonsenseqa", "jcommonsenseqa-train", shots=3,
    description="以下の質問に対して、選択肢の中から最も適切な答えを選んでください。\n\n",
    load=read_jsonl, query=_jcqa_query, choices=_jcqa_choices, gold=lambda d: int(d["label"]),
    answer=lambda d: _jcqa_choices(d)[int(d["label"])], doc_id=lambda d, i: str(d.get("q_id", i)),
))
_add(Task(
    "jnli", "ja", "mc", "jnli", None, shots=3,
    description="前提と仮説の関係を、含意・矛盾・中立の中から答えてください。\n\n",
    load=read_jsonl, query=_jnli_query, choices=lambda d: list(JNLI_LABELS.values()),
    gold=lambda d: list(JNLI_LABELS).index(d["label"]), answer=lambda d: JNLI_LABELS[d["label"]],
    doc_id=lambda d, i: str(d.get("sentence_pair_id", i)), group=lambda d: d.get("yjcaptions_id", ""),
))
_add(Task(
    "jsts", "ja", "regression", "jsts", "jsts-train", shots=3,
    description="2つの文の意味がどれくらい似ているかを、0（全く違う）から5（同じ）の整数で答えてください。\n\n",
    load=read_jsonl, query=_jsts_query, choices=lambda d: [str(i) for i in range(6)],
    gold=lambda d: float(d["label"]), answer=lambda d: str(round(float(d["label"]))),
    doc_id=lambda d, i: str(d.get("sentence_pair_id", i)),
))
_add(Task(
    "jsquad", "ja", "generation", "jsquad-valid", None, shots=1,
    description="文脈をもとに、質問に対する答えを文脈の中から抜き出してください。\n\n",
    load=_jsquad_load, query=_jsquad_query, gold=lambda d: d["answers"], answer=lambda d: d["answers"][0],
    doc_id=lambda d, i: d["id"], group=lambda d: d["title"],
))
_add(Task(
    "arc-easy", "en", "mc", "arc-easy", "arc-easy-train", shots=0,
    load=read_jsonl, query=lambda d: f"Question: {d['question']}\nAnswer:",
    choices=lambda d: [" " + c for c in d["choices"]["text"]], gold=_arc_gold,
    answer=lambda d: " " + d["choices"]["text"][_arc_gold(d)], doc_id=lambda d, i: d["id"],
    target_delimiter=" ", sampler="lm-eval",
))
_add(Task(
    "arc-challenge", "en", "mc", "arc-challenge", "arc-challenge-train", shots=0,
    load=read_jsonl, query=lambda d: f"Question: {d['question']}\nAnswer:",
    choices=lambda d: [" " + c for c in d["choices"]["text"]], gold=_arc_gold,
    answer=lambda d: " " + d["choices"]["text"][_arc_gold(d)], doc_id=lambda d, i: d["id"],
    target_delimiter=" ", sampler="lm-eval",
))
_add(Task(
    "hellaswag", "en", "mc", "hellaswag", None, shots=0,
    load=read_jsonl, query=_hellaswag_query, choices=lambda d: [" " + hellaswag_preprocess(e) for e in d["endings"]],
    gold=lambda d: int(d["label"]), answer=lambda d: " " + hellaswag_preprocess(d["endings"][int(d["label"])]),
    doc_id=lambda d, i: str(d.get("idx", i)), target_delimiter=" ", sampler="lm-eval",
))
_add(Task(
    "truthfulqa-mc", "en", "truthfulqa", "truthfulqa-mc", None, shots=0,
    load=_tqa_load, query=lambda d: f"Q: {d['question']}\nA:",
    doc_id=lambda d, i: str(i), target_delimiter=" ",
))
_add(Task(
    "aio", "ja", "generation", "aio", "aio-pool", shots=4,
    description="次のクイズの答えを、短い語句で答えてください。\n\n",
    load=_aio_load, query=_aio_query, gold=lambda d: [d["answer"]], answer=lambda d: d["answer"],
    doc_id=lambda d, i: d["qid"], score=lambda pred, gold: M.aio_scores(pred, gold),
    metrics=("exact_match", "char_f1"),
))
# lm-eval 0.4.13 tasks/japanese_leaderboard/ja_leaderboard_mgsm.yaml and ja_leaderboard_xwinograd.yaml (both
# prompt sets: these tasks exist only in the leaderboard's form)
_add(Task(
    "mgsm-ja", "ja", "generation", "mgsm-ja", "mgsm-ja-exemplars", shots=5, description=LEADERBOARD_DESCRIPTION,
    load=_mgsm_load, query=_mgsm_query, gold=lambda d: d["answer_number"],
    answer=lambda d: "\n" + d["answer"].replace("ステップごとの答え：", ""), stop=("\n\n",),
    target_delimiter="\n", sampler="lm-eval", score=lambda pred, gold: M.mgsm_scores(pred, gold),
    metrics=("acc",), max_new_tokens=256,  # lm-eval's default max_gen_toks
))
_add(Task(
    "xwinograd-ja", "ja", "mc", "xwinograd-ja", None, shots=0, load=_xwinograd_load, query=lambda d: "",
    choices=lambda d: [d["sentence1"].strip(), d["sentence2"].strip()], gold=lambda d: int(d["answer"]) - 1,
    answer=lambda d: "", metrics=("acc",),
))
_add(Task("perplexity", "multi", "perplexity"))
# held-out dolly-ja instructions (its last records): the reference answers' loss, greedy answers scored by chrF /
# ROUGE-L (kamado.eval.instruct); -select and -report are its two fixed halves (choose on one, report on the other)
INSTRUCT_METRICS = ("answer_loss", "chrf", "rouge_l")
_add(Task("dolly-ja-heldout", "ja", "instruct", "dolly-ja", metrics=INSTRUCT_METRICS))
_add(Task("dolly-ja-select", "ja", "instruct", "dolly-ja", metrics=INSTRUCT_METRICS, part=(0, 2)))
_add(Task("dolly-ja-report", "ja", "instruct", "dolly-ja", metrics=INSTRUCT_METRICS, part=(1, 2)))

# --- lm-eval 0.4.13 tasks/japanese_leaderboard (prompts: leaderboard) ----------------------------------

JNLI_LEADERBOARD_CHOICES = ["含意", "矛盾", "中立"]  # JGLUE's label order: entailment, contradiction, neutral


def _lb_jcqa_query(d: dict) -> str:
    opts = "".join(f"- {c}\n" for c in _jcqa_choices(d))
    return f"### 指示：\n出力は以下から選択してください：\n{opts}\n### 入力：\n{d['question']}\n\n### 応答："


def _lb_jnli_query(d: dict) -> str:
    return ("### 指示：\n与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\n含意\n矛盾\n中立\n\n"
            f"### 入力：\n前提：{d['sentence1']}\n仮説：{d['sentence2']}\n\n### 応答：")


def _lb_jsquad_query(d: dict) -> str:
    ctx = d["context"].split("[SEP]")[-1].strip()
    return (f"### 指示：\n与えられた文脈から、質問に対する答えを抜き出してください。\n\n### 入力：\n文脈：{ctx}\n"
            f"質問：{d['question']}\n\n### 応答：")


def _jnli_gold(d: dict) -> int:
    lab = d["label"]
    return int(lab) if isinstance(lab, int) or str(lab).isdigit() else list(JNLI_LABELS).index(lab)


LEADERBOARD: dict[str, Task] = {
    "jcommonsenseqa": Task(
        "jcommonsenseqa", "ja", "mc", "jcommonsenseqa", "jcommonsenseqa-train", shots=3,
        description=LEADERBOARD_DESCRIPTION, load=read_jsonl, query=_lb_jcqa_query,
        choices=lambda d: ["\n" + c for c in _jcqa_choices(d)], gold=lambda d: int(d["label"]),
        answer=lambda d: "\n" + _jcqa_choices(d)[int(d["label"])], doc_id=lambda d, i: str(d.get("q_id", i)),
        target_delimiter="\n", sampler="lm-eval",
    ),
    "jnli": Task(
        "jnli", "ja", "mc", "jnli", None, shots=3, description=LEADERBOARD_DESCRIPTION, load=read_jsonl,
        query=_lb_jnli_query, choices=lambda d: ["\n" + c for c in JNLI_LEADERBOARD_CHOICES], gold=_jnli_gold,
        answer=lambda d: "\n" + JNLI_LEADERBOARD_CHOICES[_jnli_gold(d)],
        doc_id=lambda d, i: str(d.get("sentence_pair_id", i)), target_delimiter="\n", sampler="lm-eval",
    ),
    "jsquad": Task(
        "jsquad", "ja", "generation", "jsquad-valid", None, shots=2, description=LEADERBOARD_DESCRIPTION,
        load=_jsquad_load, query=_lb_jsquad_query, gold=lambda d: d["answers"][:1],
        answer=lambda d: "\n" + d["answers"][0], doc_id=lambda d, i: d["id"], stop=("\n\n",),
        target_delimiter="\n", sampler="lm-eval", strict_em=True,
    ),
    # closed-book AI王 in the leaderboard's form: ja_leaderboard_jaqket_v2's prompt without the passages, 1 shot
    "aio": Task(
        "aio", "ja", "generation", "aio", "aio-pool", shots=1, description=LEADERBOARD_DESCRIPTION,
        load=_aio_load, query=_lb_aio_query, gold=lambda d: [d["answer"]], answer=lambda d: "\n" + d["answer"],
        doc_id=lambda d, i: d["qid"], stop=("\n\n",), target_delimiter="\n",
        score=lambda pred, gold: M.aio_scores(pred, gold), metrics=("exact_match", "char_f1"),
    ),
}
PROMPT_SETS = ("kamado", "leaderboard")


def get_task(name: str, prompts: str = "kamado") -> Task:
    """The task ``name`` in the prompt set ``prompts`` (tasks the set does not redefine keep kamado's)."""
    if prompts not in PROMPT_SETS:
        raise KamadoError(f"prompts {prompts!r}: expected one of {', '.join(PROMPT_SETS)}")
    if prompts == "leaderboard" and name in LEADERBOARD:
        return LEADERBOARD[name]
    return TASKS[name]

SUITES: dict[str, list[str]] = {
    "jglue": ["jcommonsenseqa", "jnli", "jsts", "jsquad"],
    # every task of lm-eval's japanese_leaderboard that kamado has (run with prompts: leaderboard for the
    # leaderboard's own prompts; aio stands in for JAQKET, whose passages are not available offline)
    "ja-leaderboard": ["jcommonsenseqa", "jnli", "jsquad", "aio", "mgsm-ja", "xwinograd-ja"],
    "en": ["arc-easy", "arc-challenge", "hellaswag", "truthfulqa-mc"],
    "quick": ["perplexity", "jcommonsenseqa"],
    "mc": ["jcommonsenseqa", "jnli", "arc-easy", "arc-challenge", "hellaswag", "truthfulqa-mc"],
}
SUITES["all"] = ["perplexity", *SUITES["jglue"], *SUITES["en"]]
ALIASES = {"jsquad-valid": "jsquad", "mgsm": "mgsm-ja", "xwinograd": "xwinograd-ja", "truthfulqa": "truthfulqa-mc", "arc_easy": "arc-easy",
           "arc_challenge": "arc-challenge", "ppl": "perplexity"}


def expand(names: list[str] | str) -> list[str]:
    """Task names from names, suite names and comma lists; unknown names are a clear error."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for raw in names:
        for n in (x.strip() for x in raw.split(",")):
            if not n:
                continue
            n = ALIASES.get(n, n)
            if n in SUITES:
                out += [t for t in SUITES[n] if t not in out]
            elif n in TASKS:
                if n not in out:
                    out.append(n)
            else:
                raise KamadoError(f"unknown eval task {n!r}; tasks: {', '.join(TASKS)}; suites: {', '.join(SUITES)}")
    return out


def sample_indices(n: int, limit: int | None, seed: int, task: str) -> list[int]:
    """The evaluated subset: all of it, or ``limit`` indices drawn deterministically from the seed."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(f"{seed}:{task}:subset").sample(range(n), limit))


def build_examples(task: Task, root: Path | None, *, limit: int | None, seed: int,
                   shots: int | None = None) -> tuple[list[Example], int]:
    """The task's evaluated examples with their prompts; also returns the full split size."""
    if task.kind == "perplexity":
        raise KamadoError("perplexity has no examples; use kamado.eval.perplexity")
    assert task.load is not None and task.query is not None and task.dataset is not None
    docs = task.load(_resolve(task.dataset, root))
    k = task.shots if shots is None else shots
    pool: list[dict] | None = None
    if k > 0 and task.fewshot_dataset:
        pool = task.load(_resolve(task.fewshot_dataset, root))
    idx = sample_indices(len(docs), limit, seed, task.name)
    lm_demos = lmeval_demos(docs, pool, k, max(idx) + 1 if idx else 0) if k > 0 and task.sampler == "lm-eval" else None
    out = []
    for i in idx:
        d = docs[i]
        did = task.doc_id(d, i) if task.doc_id else str(i)
        demos = (lm_demos[i] if lm_demos is not None else _demos(task, d, i, docs, pool, k, seed)) if k > 0 else []
        ctx = task.description + "".join(task.query(x) + task.answer(x) + task.separator for x in demos)  # type: ignore[misc]
        if task.kind == "truthfulqa":
            ctx = TRUTHFULQA_PROMPT + "\n\n"
        q = task.query(d)
        ex = Example(did, ctx + q, q)
        if task.kind == "truthfulqa":
            mc1, mc2t = list(d["mc1_targets"]), d["mc2_targets"]
            mc2c = list(mc2t)
            ex.choices = [" " + c for c in mc1] + [" " + c for c in mc2c]
            ex.gold = {"mc1": [j for j, c in enumerate(mc1) if d["mc1_targets"][c] == 1][0],
                       "mc1_n": len(mc1), "mc2_true": [j for j, c in enumerate(mc2c) if mc2t[c] == 1]}
        else:
            ex.choices = task.choices(d) if task.choices else []
            ex.gold = task.gold(d) if task.gold else None
        ex.extra["delimiter"] = task.target_delimiter
        out.append(ex)
    return out, len(docs)


LMEVAL_FEWSHOT_SEED = 1234  # lm_eval.defaults.DEFAULT_OTHER_SEED, simple_evaluate's fewshot_random_seed


def lmeval_demos(docs: list[dict], pool: list[dict] | None, k: int, upto: int,
                 seed: int = LMEVAL_FEWSHOT_SEED) -> list[list[dict]]:
    """The demonstrations lm-eval's default ``ContextSampler`` gives documents ``0..upto-1`` of a full run.

    One ``Random(seed)`` draws ``k`` documents of the few-shot pool per evaluated document, in order; with no
    separate pool (the evaluated split is the few-shot split) it draws ``k + 1`` and drops the document itself.
    """
    rnd = random.Random(seed)
    out: list[list[dict]] = []
    for i in range(upto):
        if pool is not None:
            out.append(rnd.sample(pool, k))
            continue
        doc = docs[i]
        res = [x for x in rnd.sample(docs, k + 1) if x != doc][:k]
        if len(res) < k:
            res = rnd.sample([x for x in docs if x != doc], k)
        out.append(res)
    return out


def _demos(task: Task, doc: dict, i: int, docs: list[dict], pool: list[dict] | None, k: int,
           seed: int) -> list[dict]:
    rng = random.Random(f"{seed}:{task.name}:fewshot:{i}")
    if pool is not None:
        return rng.sample(pool, min(k, len(pool)))
    # no train split: other documents of the same split (never this one, nor its group)
    g = task.group(doc) if task.group else None
    picks: list[dict] = []
    tried: set[int] = set()
    while len(picks) < k and len(tried) < len(docs) - 1:
        j = rng.randrange(len(docs))
        if j == i or j in tried:
            continue
        tried.add(j)
        if g is not None and task.group and task.group(docs[j]) == g:
            continue
        picks.append(docs[j])
    return picks
