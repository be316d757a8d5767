"""The MT-Bench-ja judge against FastChat's 564 recorded GPT-4 judgments (data root): the requests kamado builds
are the ones FastChat sent for the same question, answer and template, and the rating parser gives FastChat's
score on every judgment; ``kamado judge --dry-run`` writes the requests and sends nothing."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from kamado.catalog import resolve
from kamado.eval.judge import LANG_RULE_JA, judge_request, load_answers, load_question_set, parse_rating

STABLELM = "japanese-stablelm-instruct-alpha-7b"


@pytest.fixture(scope="module")
def fastchat(data_root: Path) -> list[dict]:
    with gzip.open(resolve("mt-bench-ja-judgments-gpt4", data_root), "rt", encoding="utf-8") as f:
        rows = [json.loads(x) for x in f]
    assert len(rows) == 564
    return rows


def _fields(template: str, user_prompt: str, known: dict[str, str]) -> dict[str, str] | None:
    """The placeholders' values of a filled template (the known ones must match literally); None: not this
    template."""
    parts = re.split(r"\{(\w+)\}", template)
    rx = "".join(re.escape(p) if i % 2 == 0 else (re.escape(known[p]) if p in known else f"(?P<{p}>.*)")
                 for i, p in enumerate(parts))
    m = re.fullmatch(rx, user_prompt, flags=re.S)
    return None if m is None else m.groupdict()


def test_parser_gives_fastchats_score_on_every_judgment(fastchat):
    assert [parse_rating(j["judgment"]) for j in fastchat] == [j["score"] for j in fastchat]
    assert {j["score"] for j in fastchat} == set(range(1, 11))


def test_requests_are_fastchats(fastchat, data_root):
    """Every recorded judgment is reproduced byte for byte by kamado's request builder from the template FastChat
    used (the data root's, or the August-2023 one without the language sentence), the question category's
    reference rule, the judged answer (from the data root where it has it: japanese-stablelm's) and the question
    text; the question texts FastChat judged are older versions than the data root's for some questions, so the
    question (and reference) text is taken from FastChat's prompt where the data root's differs."""
    questions, prompts, refs, _ = load_question_set("mt-bench-ja-full", data_root)
    _, old, _, _ = load_question_set("mt-bench-ja-full", data_root, "fastchat-2023-08")
    by_id = {str(q["question_id"]): q for q in questions}
    model, answers, _ = load_answers(resolve("mt-bench-ja-answers-stablelm", data_root))
    assert model == STABLELM
    counts = {"identical": 0, "old_template": 0, "same_question_text": 0, "stablelm": 0, "stablelm_answer": 0}
    for j in fastchat:
        q = by_id[j["question_id"]]
        templates = old if LANG_RULE_JA not in j["user_prompt"] else prompts
        name = j["judge"][1]
        known = {"answer": answers[j["question_id"]][0]} if j["model"] == STABLELM else {}
        got = _fields(templates[name]["prompt_template"], j["user_prompt"], known)
        assert got is not None, (j["model"], j["question_id"])  # FastChat's template, the judged answer
        counts["stablelm_answer"] += bool(known)
        counts["old_template"] += templates is old
        counts["same_question_text"] += got["question"] == q["turns"][0]
        qq = dict(q, turns=[got["question"], *q["turns"][1:]])
        rr = {j["question_id"]: [got["ref_answer_1"]]} if "ref_answer_1" in got else {}
        req = judge_request(qq, [known["answer"] if known else got["answer"]], 1, templates, rr, judge_model="gpt-4")
        assert req["prompt"] == name  # the reference rule picks FastChat's template for the category
        assert req["user_prompt"] == j["user_prompt"]
        assert req["system_prompt"] == "あなたは有益な助手です。" == req["body"]["messages"][0]["content"]
        assert req["body"]["messages"][1] == {"role": "user", "content": j["user_prompt"]}
        assert req["body"]["temperature"] == 0.0 and req["body"]["max_tokens"] == 2048
        counts["identical"] += 1
        counts["stablelm"] += j["model"] == STABLELM
    assert counts["identical"] == 564 and counts["stablelm"] == counts["stablelm_answer"] == 80
    # 4 of the 7 judged models (japanese-stablelm among them) were judged before the language sentence existed
    assert counts["old_template"] == 321
    assert counts["same_question_text"] == 316  # the data root's questions were edited after the judgments


def test_dry_run_cli_writes_fastchats_requests(fastchat, data_root, tmp_path):
    """The contract's command: no server anywhere, requests.jsonl with FastChat's prompts wherever the data root
    holds what FastChat judged (question text and template version)."""
    from typer.testing import CliRunner

    from kamado.cli import app

    ans = resolve("mt-bench-ja-answers-stablelm", data_root)
    fc = {(j["question_id"], j["turn"]): j["user_prompt"] for j in fastchat if j["model"] == STABLELM}
    seen = {}
    for jp in ("fastchat", "fastchat-2023-08"):
        out = tmp_path / jp
        r = CliRunner().invoke(app, ["judge", "--question-set", "mt-bench-ja-full", "--answers", str(ans), "--turns",
                                     "1", "--dry-run", "--out", str(out), "--judge-prompts", jp,
                                     "--cache", str(tmp_path / "cache")])
        assert r.exit_code == 0, r.output
        assert "nothing was sent" in r.output and not (out / "scores.json").exists()
        recs = [json.loads(x) for x in (out / "requests.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(recs) == 80 and all(r["model"] == STABLELM and r["turn"] == 1 for r in recs)
        assert all(isinstance(r["question_id"], str) for r in recs)  # as the answer file (and FastChat) write them
        assert all(r["system_prompt"] == "あなたは有益な助手です。" and not r["cached"] for r in recs)
        mine = {(r["question_id"], r["turn"]): r["user_prompt"] for r in recs}
        assert set(mine) == set(fc)
        seen[jp] = sum(mine[k] == fc[k] for k in fc)
    # FastChat judged this model with the August-2023 templates and older question texts
    assert seen == {"fastchat": 0, "fastchat-2023-08": 45}
