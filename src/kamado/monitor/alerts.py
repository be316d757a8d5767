"""Alerts: e-mail over SMTP, a webhook (Slack-format or plain JSON) and W&B ``run.alert``.

``Alerter.send(kind, step, text, ...)`` never blocks training and never raises: messages go to a
spool (a queue drained by a background thread) and are retried with backoff; every failed attempt
and every message given up on is counted and reported through ``on_failure`` (the run guard writes
them to ``events.jsonl``). Alerts of one kind are rate limited (``alerts.rate_limit_s``), except
the once-per-run kinds (started, finished, crashed, hang, stopped, preempted). Payloads are NaN-safe (non-finite
numbers become strings, so the JSON is valid).

Configured under ``pretrain.alerts`` (and ``tune.alerts``)::

    alerts:
      email: {host: smtp.example.com, port: 587, sender: kamado@example.com, to: [ops@example.com],
              starttls: true, user: kamado, password_env: KAMADO_SMTP_PASSWORD}
      webhook: {url: https://hooks.slack.com/services/..., format: slack}   # or format: json
      wandb: true          # run.alert when W&B logging is on
      rate_limit_s: 300
"""

from __future__ import annotations

import json
import math
import os
import queue
import smtplib
import ssl as ssl_mod
import threading
import time
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any, Literal

from kamado.config import StrictModel
from kamado.jsonl import to_json_safe

KINDS = ("started", "finished", "crashed", "spike", "nonfinite", "rollback", "hang", "stopped", "preempted")
ONCE = {"started", "finished", "crashed", "hang", "stopped", "preempted"}  # never rate limited
LEVEL = {"started": "INFO", "finished": "INFO", "spike": "WARN", "nonfinite": "WARN", "rollback": "WARN",
         "crashed": "ERROR", "hang": "ERROR", "stopped": "ERROR", "preempted": "WARN"}


class EmailConfig(StrictModel):
    """SMTP e-mail. The password is read from the environment variable named by ``password_env``."""

    host: str
    port: int = 25
    sender: str
    to: list[str]
    starttls: bool = False
    ssl: bool = False  # SMTP over TLS from the start (port 465)
    user: str | None = None
    password_env: str | None = None
    timeout_s: float = 10.0


class WebhookConfig(StrictModel):
    """An HTTP POST of JSON: ``format: slack`` sends ``{"text": ...}``; ``format: json`` the whole alert."""

    url: str
    format: Literal["slack", "json"] = "slack"
    timeout_s: float = 10.0


class AlertsConfig(StrictModel):
    """Where alerts go; nothing is sent when neither e-mail nor webhook is set (and W&B is off)."""

    email: EmailConfig | None = None
    webhook: WebhookConfig | None = None
    wandb: bool = True  # W&B run.alert when the run logs to W&B
    rate_limit_s: float = 300.0  # at most one alert of a kind per this many seconds (spike, rollback, ...)
    retries: int = 3
    retry_wait_s: float = 2.0
    kinds: list[str] = list(KINDS)  # which kinds are sent


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def compose(alert: dict[str, Any]) -> tuple[str, str]:
    """(title, text) of an alert: the run, step, what happened, what the guard did, checkpoint, metrics."""
    title = f"[kamado] {alert['kind']}: {alert.get('run') or 'run'} at step {alert.get('step')}"
    lines = [f"run: {alert.get('run')}", f"step: {alert.get('step')}", f"what: {alert['kind']} - {alert.get('text', '')}"]
    if alert.get("action"):
        lines.append(f"guard: {alert['action']}")
    if alert.get("checkpoint"):
        lines.append(f"last good checkpoint: {alert['checkpoint']}")
    m = alert.get("metrics") or {}
    if m:
        lines.append("last metrics: " + ", ".join(f"{k}={_fmt(v)}" for k, v in m.items()))
    if alert.get("host"):
        lines.append(f"host: {alert['host']} (pid {alert.get('pid')})")
    return title, "\n".join(lines)


def send_email(cfg: EmailConfig, title: str, text: str) -> None:
    msg = EmailMessage()
    msg["Subject"] = title
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.to)
    msg.set_content(text, cte="quoted-printable")  # plain words stay readable in the raw message
    ctx = ssl_mod.create_default_context()
    cls = smtplib.SMTP_SSL if cfg.ssl else smtplib.SMTP
    kw: dict[str, Any] = {"context": ctx} if cfg.ssl else {}
    with cls(cfg.host, cfg.port, timeout=cfg.timeout_s, **kw) as s:
        if cfg.starttls and not cfg.ssl:
            s.starttls(context=ctx)
        if cfg.user:
            pw = os.environ.get(cfg.password_env or "", "")
            if cfg.password_env and not pw:
                raise RuntimeError(f"alerts.email.password_env: ${cfg.password_env} is not set")
            s.login(cfg.user, pw)
        s.send_message(msg)


def send_webhook(cfg: WebhookConfig, alert: dict[str, Any], title: str, text: str) -> None:
    body = {"text": f"*{title}*\n{text}"} if cfg.format == "slack" else dict(alert, title=title, text=text)
    data = json.dumps(to_json_safe(body, nonfinite="string"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    req = urllib.request.Request(cfg.url, data=data, method="POST",
                                 headers={"Content-Type": "application/json; charset=utf-8"})
    with urllib.request.urlopen(req, timeout=cfg.timeout_s) as r:
        if r.status >= 300:
            raise RuntimeError(f"webhook answered HTTP {r.status}")


class Alerter:
    """Sends alerts to the configured channels from a background thread (``sync=True``: in the caller)."""

    def __init__(self, cfg: AlertsConfig | None, *, run: str = "", enabled: bool = True, sync: bool = False,
                 on_failure: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg or AlertsConfig()
        self.run, self.sync, self.on_failure = run, sync, on_failure
        self.enabled = enabled
        self.wandb_run: Any = None  # set by the trainer when W&B logging is on
        self.sent: dict[str, int] = {}  # channel -> messages delivered
        self.failures = 0  # failed attempts
        self.dropped = 0  # messages given up on after the retries
        self.suppressed = 0  # rate limited
        self._last: dict[str, float] = {}
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        c = self.cfg
        return self.enabled and (c.email is not None or c.webhook is not None or (c.wandb and self.wandb_run is not None))

    def send(self, kind: str, step: int | None, text: str, *, action: str = "", checkpoint: str | None = None,
             metrics: dict[str, Any] | None = None) -> bool:
        """Queue an alert; False when it is off, not configured or rate limited. Never raises."""
        try:
            if not self.active or kind not in self.cfg.kinds:
                return False
            now = time.monotonic()
            if kind not in ONCE:
                last = self._last.get(kind)
                if last is not None and now - last < self.cfg.rate_limit_s:
                    self.suppressed += 1
                    return False
            self._last[kind] = now
            alert = to_json_safe({"kind": kind, "run": self.run, "step": step, "text": text, "action": action,
                                  "checkpoint": checkpoint, "metrics": metrics or {}, "time": time.time(),
                                  "host": os.uname().nodename, "pid": os.getpid()}, nonfinite="string")
            if self.sync:
                self._deliver(alert)
            else:
                self._ensure_thread()
                self._q.put(alert)
            return True
        except Exception as e:  # an alert must never stop training
            self._fail({"channel": "alerter", "kind": kind, "error": repr(e)[:300]})
            return False

    # ------------------------------------------------------------------ delivery

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="kamado-alerts", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            a = self._q.get()
            try:
                if a is None:
                    return
                self._deliver(a)
            finally:
                self._q.task_done()

    def _channels(self) -> list[tuple[str, Callable[[dict[str, Any], str, str], None]]]:
        c = self.cfg
        out: list[tuple[str, Callable[[dict[str, Any], str, str], None]]] = []
        if c.email is not None:
            out.append(("email", lambda a, t, x: send_email(c.email, t, x)))  # type: ignore[arg-type]
        if c.webhook is not None:
            out.append(("webhook", lambda a, t, x: send_webhook(c.webhook, a, t, x)))  # type: ignore[arg-type]
        if c.wandb and self.wandb_run is not None:
            out.append(("wandb", self._wandb))
        return out

    def _wandb(self, a: dict[str, Any], title: str, text: str) -> None:
        import wandb

        level = getattr(wandb.AlertLevel, LEVEL.get(a["kind"], "INFO"), None)
        self.wandb_run.alert(title=title, text=text, level=level, wait_duration=0)

    def _deliver(self, a: dict[str, Any]) -> None:
        title, text = compose(a)
        for name, fn in self._channels():
            for attempt in range(max(1, self.cfg.retries)):
                try:
                    fn(a, title, text)
                    self.sent[name] = self.sent.get(name, 0) + 1
                    break
                except Exception as e:
                    self.failures += 1
                    last = attempt + 1 >= max(1, self.cfg.retries)
                    if last:
                        self.dropped += 1
                    self._fail({"channel": name, "kind": a["kind"], "attempt": attempt + 1, "gave_up": last,
                                "error": repr(e)[:300]})
                    if not last:
                        time.sleep(self.cfg.retry_wait_s * (2 ** attempt))

    def _fail(self, detail: dict[str, Any]) -> None:
        if self.on_failure is not None:
            try:
                self.on_failure(detail)
            except Exception:
                pass

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the spool is empty (at most ``timeout`` s); True when everything queued was handled."""
        if self._thread is None:
            return True
        t_end = time.monotonic() + timeout
        while self._q.unfinished_tasks and time.monotonic() < t_end:
            time.sleep(0.05)
        return not self._q.unfinished_tasks

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
        if self._thread is not None and self._thread.is_alive():
            self._q.put(None)
