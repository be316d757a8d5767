"""`kamado judge`: a real `kamado serve` as the model under test, a local OpenAI-protocol server as the judge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from _toy import build_toy_model

from kamado.eval.judge import JudgeSettings, parse_rating, run_judge

ROOT = Path(__file__).resolve().parents[1]
QIDS = [31, 41, 71, 72]  # math, reasoning (graded against references), writing x2
BAD = 72  # the judge gives no parseable rating for this question's turn 1


def test_parse_rating():
    assert parse_rating("説明…\n評価：[[8]]") == 8
    assert parse_rating("Rating: [[7.5]]") == 7.5
    assert parse_rating("評価：［［９］］") == 9  # full-width brackets and digits
    assert parse_rating("the answer [3] is fine") == 3  # FastChat's backup pattern
    assert parse_rating("評価：とても良い") == -1
    assert parse_rating("[[15]]") == -1 and parse_rating("[[0]]") == -1


class FakeJudge:
    """The paid API stand-in: speaks /v1/chat/completions, answers 429 once, records every request."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.first = True
        self.lock = threading.Lock()
        judge = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with judge.lock:
                    if judge.first:
                        judge.first = False
                        self.send_response(429)
                        self.send_header("Retry-After", "0")
                        self.send_header("Content-Length", "2")
                        self.end_headers()
                        self.wfile.write(b"{}")
                        return
                    judge.requests.append(body)
                    judge.auth.append(self.headers.get("Authorization"))
                user = body["messages"][-1]["content"]
                turn = 2 if "### User:" in user else 1
                qid = next(q for q in QIDS if QTEXT[q] in user)
                if qid == BAD and turn == 1:
                    text = "説明です。評価：とても良い"
                elif turn == 2:
                    text = "The assistant did ok. Rating: ［［3］］"
                else:
                    text = f"説明です。評価：[[{qid % 9 + 1}]]"
                data = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/v1"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()


QTEXT: dict[int, str] = {}


@pytest.fixture(scope="module")
def questions(data_root: Path, tmp_path_factory) -> Path:
    rows = [json.loads(x) for x in (data_root / "ja_mt_bench/question_full.jsonl").read_text().splitlines()]
    picked = [r for r in rows if r["question_id"] in QIDS]
    for r in picked:
        QTEXT[r["question_id"]] = r["turns"][0]
    p = tmp_path_factory.mktemp("q") / "questions.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked))
    return p


@pytest.fixture(scope="module")
def model_url(data_root: Path, tmp_path_factory):
    toy = build_toy_model(ROOT / ".cache" / "toy-eval-v1", data_root)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "KAMADO_QUIET": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "kamado.cli", "serve", str(toy), "--port", "0",
                                 "--name", "toy-chat", "--threads", "1"], stdout=f, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    deadline = time.time() + 180
    while "http://" not in log.read_text():
        assert proc.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.3)
    yield log.read_text().split("at ", 1)[1].split()[0]
    proc.terminate()
    proc.wait(timeout=30)


def test_judge_flow_end_to_end_and_resume(questions, model_url, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("KAMADO_TEST_JUDGE_KEY", "sk-test")
    judge = FakeJudge()
    out = tmp_path / "judge"
    s = JudgeSettings(questions=str(questions), model_url=model_url, model=None, judge_url=judge.url,
                      judge_model="fake-gpt", api_key_env="KAMADO_TEST_JUDGE_KEY", max_tokens=12,
                      concurrency=3, retries=3, backoff=0.01)
    summary = run_judge(s, out, data_root)

    answers = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    assert sorted(a["question_id"] for a in answers) == QIDS
    assert all(a["model_id"] == "toy-chat" and len(a["choices"][0]["turns"]) == 2 for a in answers)
    by_q = {a["question_id"]: a["choices"][0]["turns"] for a in answers}

    judgments = [json.loads(x) for x in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(judgments) == 8 and len(judge.requests) == 8  # 4 questions x 2 turns; the 429 was retried
    assert set(judge.auth) == {"Bearer sk-test"}
    for j in judgments:
        q, t = j["question_id"], j["turn"]
        ref_cat = q in (31, 41)
        assert j["judge"][1] == ("single-math-v1" if ref_cat else "single-v1") + ("-multi-turn" if t == 2 else "")
        assert by_q[q][t - 1] in j["user_prompt"]  # the model's real answer is what was judged
        if t == 1:
            assert j["user_prompt"].startswith("[指示]")  # Japanese judge prompt
            assert ("[参考回答の開始]" in j["user_prompt"]) == ref_cat
        else:
            assert "### Assistant A:" in j["user_prompt"] and by_q[q][0] in j["user_prompt"]
        expect = -1 if (q == BAD and t == 1) else (3 if t == 2 else q % 9 + 1)
        assert j["score"] == expect
    assert judge.requests[0]["temperature"] == 0.0
    assert judge.requests[0]["messages"][0]["role"] == "system"

    # the math question's turn-1 prompt carries the GPT-4 reference answer
    ref = [json.loads(x) for x in (data_root / "ja_mt_bench/reference_answer/gpt-4.jsonl").read_text().splitlines()]
    ref31 = next(r for r in ref if r["question_id"] == 31)["choices"][0]["turns"][0]
    assert any(ref31 in j["user_prompt"] for j in judgments if j["question_id"] == 31 and j["turn"] == 1)

    # scores: the malformed rating is counted as invalid and left out of the means
    assert summary["invalid"] == 1
    assert summary["categories"]["writing"]["turn1"] == 9.0  # question 72 turn 1 had no rating
    scores = json.loads((out / "scores.json").read_text())
    assert scores["categories"]["math"] == {"turn1": 5.0, "turn2": 3.0, "score": 4.0, "n": 2}
    assert scores["categories"]["reasoning"]["turn1"] == 6.0
    assert scores["n"] == 7 and scores["score"] == pytest.approx((5 + 6 + 9 + 3 * 4) / 7, abs=1e-4)

    # resume: nothing is asked again, nothing is duplicated
    from typer.testing import CliRunner

    from kamado.cli import app

    before = len(judge.requests)
    res = CliRunner().invoke(app, ["judge", "--questions", str(questions), "--model-url", model_url,
                                   "--judge-url", judge.url, "--judge-model", "fake-gpt", "--api-key-env",
                                   "KAMADO_TEST_JUDGE_KEY", "--out", str(out), "--max-tokens", "12"])
    assert res.exit_code == 0, res.output
    assert len(judge.requests) == before
    assert len((out / "answers.jsonl").read_text().splitlines()) == 4
    assert len((out / "judgments.jsonl").read_text().splitlines()) == 8
    judge.srv.shutdown()
