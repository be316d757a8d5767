"""`kamado judge` against a real local OpenAI-protocol server that misbehaves: a numeric ``content``, a body cut
short, invalid UTF-8, no rating. Each is a failed (or unparseable) judgment counted in ``parse_failure_share``;
cut-short bodies are asked again; ``scores.json`` is always written; a rerun asks only the failed ones; the
reply cache makes judging unchanged answers again free; k samples give a median and a spread."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kamado.catalog import resolve
from kamado.eval.judge import JudgeSettings, load_answers, run_judge

N = 6  # questions 1..6 of mt-bench-ja-full, answered by japanese-stablelm (data root)


class Judge:
    """A chat-completions server on 127.0.0.1; ``modes[qid]`` says how it answers that question's request."""

    def __init__(self, qtext: dict[int, str]) -> None:
        self.qtext, self.modes = qtext, {}
        self.calls: Counter = Counter()
        self.scores = [6, 9, 8]  # "cycle": successive ratings for k-sample judgments
        self.lock = threading.Lock()
        judge = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, body: bytes, length: int | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = body["messages"][-1]["content"]
                qid = next(q for q, t in judge.qtext.items() if f"[質問]\n{t}\n" in user)
                with judge.lock:
                    judge.calls[qid] += 1
                    n = judge.calls[qid]
                    mode = judge.modes.get(qid, "ok")
                if mode == "truncated" and n <= 2:  # the first two replies are cut short, then a whole one
                    self.close_connection = True
                    return self._send(b'{"choices": [{"message": {"content": "', length=200)
                if mode == "bad-utf8":
                    return self._send(b'{"choices": [{"message": {"content": "\xff\xfe [[5]]"}}]}')
                content: object = f"説明です。評価：[[{qid + 2}]]"
                if mode == "numeric":
                    content = 7
                elif mode == "no-rating":
                    content = "説明です。評価：とても良い"
                elif mode == "cycle":
                    content = f"評価：[[{judge.scores[(n - 1) % 3]}]]"
                self._send(json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                             "content": content}}]}).encode())

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/v1"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()


@pytest.fixture()
def judge(data_root):
    qs = [json.loads(x) for x in resolve("mt-bench-ja-full", data_root).read_text(encoding="utf-8").splitlines()]
    j = Judge({q["question_id"]: q["turns"][0] for q in qs[:N]})
    yield j
    j.srv.shutdown()
    j.srv.server_close()


def _settings(judge: Judge, data_root: Path, cache: Path | None, **kw) -> JudgeSettings:
    return JudgeSettings(questions="mt-bench-ja-full", judge_url=judge.url, judge_model="fake-gpt", api_key_env="",
                         turns=[1], limit=N, retries=2, backoff=0.01, concurrency=3, cache_dir=cache,
                         answers_file=resolve("mt-bench-ja-answers-stablelm", data_root), **kw)


def test_unusable_replies_are_failed_judgments(judge, data_root, tmp_path):
    judge.modes = {1: "numeric", 2: "truncated", 3: "bad-utf8", 5: "no-rating"}
    out = tmp_path / "j"
    summary = run_judge(_settings(judge, data_root, tmp_path / "cache"), out, data_root)  # no exception
    scores = json.loads((out / "scores.json").read_text())
    assert scores == json.loads(json.dumps(summary))
    recs = {r["question_id"]: r for r in map(json.loads, (out / "judgments.jsonl").read_text().splitlines())}
    assert set(recs) == {"1", "2", "3", "4", "5", "6"}  # question ids as the answer file writes them
    assert "content is int" in recs["1"]["error"] and recs["1"]["score"] == -1
    assert judge.calls[1] == 1  # a well-formed reply with a number for content is not asked again
    assert recs["2"]["score"] == 4 and "error" not in recs["2"] and judge.calls[2] == 3  # cut short twice: retried
    assert "not JSON in UTF-8" in recs["3"]["error"] and judge.calls[3] == 3  # retried, then a failed judgment
    assert recs["5"]["score"] == -1 and "error" not in recs["5"]  # FastChat's -1: no rating in the text
    assert scores["judged"] == 6 and scores["invalid"] == 3 and scores["failed"] == 2
    assert scores["parse_failure_share"] == 0.5 and scores["n"] == 3
    assert scores["errors"] == 0 and scores["cache"] == {"hits": 0, "misses": 6}

    # the next run asks again only for the failed judgments; the server behaves now
    judge.modes, before = {}, dict(judge.calls)
    summary = run_judge(_settings(judge, data_root, tmp_path / "cache"), out, data_root)
    assert {q: judge.calls[q] - before.get(q, 0) for q in judge.calls} == {1: 1, 2: 0, 3: 1, 4: 0, 5: 0, 6: 0}
    assert summary["failed"] == 0 and summary["invalid"] == 1 and summary["parse_failure_share"] == round(1 / 6, 4)

    # judging the same answers again elsewhere costs nothing: every reply comes from the cache
    before = sum(judge.calls.values())
    again = run_judge(_settings(judge, data_root, tmp_path / "cache"), tmp_path / "other", data_root)
    assert sum(judge.calls.values()) == before and again["cache"] == {"hits": 6, "misses": 0}
    assert again["score"] == summary["score"]
    # the requests are the same whether sent or only written
    dry = run_judge(_settings(judge, data_root, tmp_path / "cache", dry_run=True), tmp_path / "dry", data_root)
    assert dry["cached"] == 6 and dry["to_send"] == 0 and sum(judge.calls.values()) == before


def test_unreachable_judge_still_writes_scores(judge, data_root, tmp_path):
    from kamado.config import KamadoError

    s = _settings(judge, data_root, None)
    judge.srv.shutdown()
    judge.srv.server_close()
    with pytest.raises(KamadoError, match="request\\(s\\) failed"):
        run_judge(s, tmp_path / "j", data_root)
    scores = json.loads((tmp_path / "j" / "scores.json").read_text())
    assert scores["errors"] == N and scores["failed"] == N and scores["parse_failure_share"] == 1.0


def test_k_samples_median_spread_and_japanese_share(judge, data_root, tmp_path):
    judge.modes = {q: "cycle" for q in range(1, N + 1)}
    summary = run_judge(_settings(judge, data_root, tmp_path / "cache", samples=3), tmp_path / "j", data_root)
    recs = [json.loads(x) for x in (tmp_path / "j" / "judgments.jsonl").read_text().splitlines()]
    assert all(r["scores"] == [6, 9, 8] and r["score"] == 8 and r["spread"] == 3 for r in recs)
    assert summary["score"] == 8 and summary["spread_mean"] == 3 and sum(judge.calls.values()) == 3 * N
    # question 1 asks for Python code: that answer is mostly not Japanese
    _, answers, _ = load_answers(resolve("mt-bench-ja-answers-stablelm", data_root))
    assert recs[0]["answer_ja_share"] is not None and min(r["answer_ja_share"] for r in recs) < 0.5
    assert summary["answers_with_text"] == N and summary["answers_mostly_not_japanese"] >= 1
    assert 0 < summary["ja_share"] < 1 and summary["samples"] == 3
    assert answers["1"][0].startswith("import os")


def test_cli_reports_failed_judgments(judge, data_root, tmp_path):
    from typer.testing import CliRunner

    from kamado.cli import app

    judge.modes = {1: "numeric", 2: "bad-utf8", 3: "no-rating"}
    out = tmp_path / "j"
    r = CliRunner().invoke(app, ["judge", "--question-set", "mt-bench-ja-full", "--limit", "4", "--turns", "1",
                                 "--answers", str(resolve("mt-bench-ja-answers-stablelm", data_root)),
                                 "--judge-url", judge.url, "--judge-model", "fake-gpt", "--api-key-env", "",
                                 "--retries", "1", "--cache", str(tmp_path / "cache"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "3 of 4 judgment(s) without a usable [[rating]] (2 failed replies; share 75.0%" in " ".join(r.output.split())
    assert json.loads((out / "scores.json").read_text())["parse_failure_share"] == 0.75
