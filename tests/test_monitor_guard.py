"""The run guard's parts with real receivers: detectors and policies (the Guard callback of kamado.train.guard
used without a trainer), alerts to a real SMTP server (aiosmtpd) and HTTP webhook on 127.0.0.1, and the watchdog
process against real (hanging, SIGKILLed) processes."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from kamado.monitor.alerts import Alerter, AlertsConfig, EmailConfig, WebhookConfig
from kamado.monitor.guard import Detector, GuardConfig, GuardStop, InjectConfig, read_events, robust_z
from kamado.train.guard import Guard


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receivers:
    """A real SMTP server and a real HTTP webhook receiver on 127.0.0.1."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.mails: list[dict] = []
        self.posts: list[dict] = []
        mails, posts = self.mails, self.posts

        class Mail:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                mails.append({"to": envelope.rcpt_tos, "data": envelope.content.decode("utf-8", "replace")})
                return "250 OK"

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
                posts.append({"t": time.time(), "path": self.path, "body": body})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.smtp_port = _free_port()
        self.smtp = Controller(Mail(), hostname="127.0.0.1", port=self.smtp_port)
        self.smtp.start()
        self.http = HTTPServer(("127.0.0.1", 0), Hook)
        self.http_port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def alerts(self, fmt: str = "slack", **kw) -> AlertsConfig:
        return AlertsConfig(email=EmailConfig(host="127.0.0.1", port=self.smtp_port, sender="kamado@localhost",
                                              to=["ops@localhost"]),
                            webhook=WebhookConfig(url=f"http://127.0.0.1:{self.http_port}/hook", format=fmt), **kw)

    def close(self) -> None:
        self.smtp.stop()
        self.http.shutdown()


@pytest.fixture
def receivers():
    r = Receivers()
    yield r
    r.close()


def _wait(cond, timeout=20.0):
    t_end = time.time() + timeout
    while time.time() < t_end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


# ---------------------------------------------------------------- detectors and policies

def test_robust_z_and_detector():
    z, med = robust_z(10.0, [3.0, 3.1, 2.9, 3.05, 2.95])
    assert med == 3.0 and z > 50
    d = Detector(GuardConfig(warmup=8, window=16))
    for i in range(7):  # warm-up: no spike verdicts yet
        f, _ = d.flags(100.0, 1.0)
        assert f == [0.0, 0.0, 0.0]
        d.accept(3.0 + 0.01 * (i % 3), 1.0)
    d.accept(3.0, 1.0)
    assert d.flags(3.02, 1.1)[0] == [0.0, 0.0, 0.0]
    assert d.flags(9.0, 1.1)[0] == [0.0, 1.0, 0.0]  # loss spike
    assert d.flags(3.0, 50.0)[0] == [0.0, 0.0, 1.0]  # gradient explosion
    assert d.flags(float("nan"), 1.0)[0][0] == 1.0
    assert d.flags(3.0, float("inf"))[0][0] == 1.0


def _begun(g: Guard, step: int = 0) -> Guard:
    """A guard past pre_build and a fresh pre_train at ``step``, without a trainer."""
    g.pre_build()
    g.last_step = step
    g.events.log(step, "started", {})
    return g


def test_policy_skip_then_rollback_then_stop(tmp_path):
    g = _begun(Guard(GuardConfig(warmup=8, patience=3, max_rollbacks=1, watchdog=False), None, tmp_path))
    for s in range(1, 21):
        assert g.check(s, 3.0 + 0.01 * (s % 4), 1.0) == "ok"
    assert g.check(21, float("nan"), 1.0) == "skip"  # an isolated bad step: update skipped
    assert g.check(22, 3.01, 1.0) == "ok"
    assert [g.check(s, 12.0, 1.0) for s in (23, 24, 25)] == ["skip", "skip", "rollback"]
    cks = [(10, "c10"), (20, "c20"), (22, "c22")]  # c22 holds the weights that produced the loss of step 23
    assert g.rollback_target(cks) == (20, "c20")
    g.rolled_back(25, 20, "c20", {"pos": 20}, {"pos": 25})
    ev = read_events(tmp_path / "events.jsonl")
    kinds = [e["kind"] for e in ev]
    assert kinds == ["started", "nonfinite", "spike", "spike", "spike", "rollback"]
    assert all({"step", "kind", "detail"} <= set(e) for e in ev)
    rb = ev[-1]
    assert rb["step"] == 25 and rb["detail"]["from_step"] == 20 and rb["detail"]["steps_lost"] == 5
    assert g.state_dict()["rollbacks"] == 1 and g.state_dict()["skipped_windows"][0]["from_step"] == 20
    assert [g.check(s, 12.0, 1.0) for s in (21, 22, 23)][-1] == "rollback"
    with pytest.raises(GuardStop, match="max_rollbacks"):
        g.rollback_target(cks)


def test_drills_fire_once_and_step_0_is_only_for_a_hang(tmp_path):
    from pydantic import ValidationError

    g = _begun(Guard(GuardConfig(inject=InjectConfig(step=5, kind="lr_spike", factor=100), watchdog=False), None,
                     tmp_path))
    assert [g.lr_factor(None, s) for s in (4, 5, 5, 6)] == [1.0, 100.0, 1.0, 1.0]
    g2 = Guard(GuardConfig(inject=InjectConfig(step=5, kind="lr_spike"), watchdog=False), None, tmp_path)
    g2.load_state_dict(g.state_dict())  # a resume (the state in a checkpoint) does not repeat a fired drill
    assert g2.lr_factor(None, 5) == 1.0
    assert InjectConfig(step=0, kind="hang").step == 0
    for kind in ("lr_spike", "nan"):
        with pytest.raises(ValidationError, match="step 0 is only for kind hang"):
            InjectConfig(step=0, kind=kind)


# ---------------------------------------------------------------- alerts

def test_alerts_email_and_slack_webhook(receivers):
    events = []
    a = Alerter(receivers.alerts("slack"), run="tiny/pretrain", on_failure=events.append)
    assert a.send("rollback", 301, "loss spike persisted", action="rolled back to step 200",
                  checkpoint="ck/step_00000200", metrics={"loss": float("nan"), "grad_norm": 3.5})
    a.close(timeout=20)
    assert not events
    assert len(receivers.mails) == 1 and len(receivers.posts) == 1
    mail = receivers.mails[0]["data"]
    assert "Subject: [kamado] rollback: tiny/pretrain at step 301" in mail
    import email
    from email import policy

    text = email.message_from_string(mail, policy=policy.default).get_content()
    assert "rolled back to step 200" in text and "loss=nan" in text and "last good checkpoint: ck/" in text
    body = json.loads(receivers.posts[0]["body"])
    assert set(body) == {"text"} and "rollback" in body["text"] and "step 301" in body["text"]


def test_alerts_json_format_nan_safe_and_rate_limited(receivers):
    a = Alerter(receivers.alerts("json", rate_limit_s=60).model_copy(update={"email": None}), run="r")
    assert a.send("spike", 10, "x", metrics={"loss": float("inf")})
    assert not a.send("spike", 11, "x")  # rate limited per kind
    assert a.send("rollback", 12, "y")  # another kind passes
    assert a.send("hang", 13, "z") and a.send("hang", 14, "z")  # once-per-run kinds are never limited
    a.close(timeout=20)
    bodies = [json.loads(p["body"]) for p in receivers.posts]  # strict JSON: no NaN/Infinity tokens
    assert [b["kind"] for b in bodies] == ["spike", "rollback", "hang", "hang"]
    assert bodies[0]["metrics"]["loss"] == "inf" and bodies[0]["step"] == 10
    assert a.suppressed == 1


def test_failing_receivers_never_raise_and_are_counted():
    dead = _free_port()  # nothing listens here
    events = []
    cfg = AlertsConfig(email=EmailConfig(host="127.0.0.1", port=dead, sender="a@b", to=["c@d"], timeout_s=2),
                       webhook=WebhookConfig(url=f"http://127.0.0.1:{dead}/x", timeout_s=2), retries=2,
                       retry_wait_s=0.01)
    a = Alerter(cfg, run="r", on_failure=events.append)
    t0 = time.time()
    assert a.send("spike", 1, "x")  # queued: returns at once
    assert time.time() - t0 < 0.5
    a.close(timeout=20)
    assert a.failures == 4 and a.dropped == 2
    assert {e["channel"] for e in events} == {"email", "webhook"} and sum(e["gave_up"] for e in events) == 2


# ---------------------------------------------------------------- watchdog (real processes)

_FAKE_TRAINER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from kamado.monitor.guard import GuardConfig
    from kamado.monitor.alerts import AlertsConfig
    from kamado.train.guard import Guard
    out, mode, alerts = Path(sys.argv[1]), sys.argv[2], AlertsConfig.model_validate_json(sys.argv[3])
    g = Guard(GuardConfig(hang_timeout_s=2, term_grace_s=2), alerts, out, run="fake")
    g.pre_build()
    g._training = True
    for s in range(1, 100):
        g.check(s, 3.0, 1.0)
        g.step_done(s, {"loss": 3.0})
        print(s, flush=True)
        if s == 5:
            while True:  # mode hang: stuck (and SIGTERM handled by the guard); mode kill: killed from outside
                time.sleep(0.1)
""")


def _fake(tmp_path: Path, mode: str, alerts: AlertsConfig) -> subprocess.Popen:
    script = tmp_path / "fake_trainer.py"
    script.write_text(_FAKE_TRAINER)
    p = subprocess.Popen([sys.executable, str(script), str(tmp_path), mode, alerts.model_dump_json()],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.strip() == "5":
            break
    return p


def test_watchdog_hang_alert_and_stop(tmp_path, receivers):
    t0 = time.time()
    p = _fake(tmp_path, "hang", receivers.alerts("json").model_copy(update={"email": None}))
    rc = p.wait(timeout=30)
    err = p.stderr.read()
    assert rc != 0 and "hang_timeout_s" in err  # ended by the watchdog with a clear error
    assert _wait(lambda: any("hang" in x["body"] for x in receivers.posts), 10)
    hang = [json.loads(x["body"]) for x in receivers.posts if '"hang"' in x["body"]][0]
    assert hang["step"] == 5 and hang["kind"] == "hang"
    assert time.time() - t0 < 25
    kinds = [e["kind"] for e in read_events(tmp_path / "events.jsonl")]
    assert "hang" in kinds and "stopped" in kinds


def test_watchdog_crash_alert_after_sigkill(tmp_path, receivers):
    p = _fake(tmp_path, "kill", receivers.alerts("slack"))
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    assert _wait(lambda: any("crashed" in x["body"] for x in receivers.posts)
                 and any("crashed" in m["data"] for m in receivers.mails), 15)
    text = json.loads([x for x in receivers.posts if "crashed" in x["body"]][0]["body"])["text"]
    assert "step 5" in text and "loss=3" in text
    ev = read_events(tmp_path / "events.jsonl")
    assert any(e["kind"] == "crashed" and e["step"] == 5 for e in ev)


def test_watchdog_quiet_on_clean_end(tmp_path, receivers):
    g = Guard(GuardConfig(hang_timeout_s=1), receivers.alerts("json").model_copy(update={"email": None}),
              tmp_path, run="clean")
    g.pre_build()
    g.alerter.send("started", 0, "training started")
    g.step_done(1, {"loss": 2.0})
    g.finish(1, {"loss": 2.0})
    time.sleep(1.5)
    kinds = [json.loads(x["body"])["kind"] for x in receivers.posts]
    assert kinds == ["started", "finished"]
    assert not math.isnan(g.last["loss"])


# ---------------------------------------------------------------- all ranks decide together (2 gloo ranks)

def _rank(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from kamado.train.distributed import Dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    g = _begun(Guard(GuardConfig(warmup=4, patience=2, watchdog=False), None, Path(out) / str(rank),
                     dist=Dist(rank=rank, world_size=2)))
    verdicts = [g.check(s, 3.0, 1.0) for s in range(1, 6)]
    # only rank 1 sees a bad value (a NaN in its local loss, a spike in its grad norm): both must skip together
    verdicts.append(g.check(6, float("nan") if rank == 1 else 3.0, 1.0))
    verdicts.append(g.check(7, 3.0, 50.0 if rank == 1 else 1.0))
    (Path(out) / f"v{rank}.json").write_text(json.dumps(verdicts))
    dist.destroy_process_group()


@pytest.mark.slow  # 17 s: two gloo rank processes (test-fast run on a loaded box)
def test_two_gloo_ranks_decide_together(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_rank, args=(f"file://{tmp_path / 'store'}", str(tmp_path)), nprocs=2, start_method="spawn")
    v0, v1 = (json.loads((tmp_path / f"v{r}.json").read_text()) for r in (0, 1))
    assert v0 == v1 == ["ok"] * 5 + ["skip", "rollback"]
    assert [e["kind"] for e in read_events(tmp_path / "0" / "events.jsonl")] == ["started", "nonfinite", "grad_explosion"]
    assert not (tmp_path / "1" / "events.jsonl").exists()  # only rank 0 writes
