"""The watchdog: a separate process started before the model is built (``python -m kamado.monitor.watchdog SPEC``).

The trainer side (:class:`Watchdog`, driven by the :class:`kamado.train.guard.Guard` callback) writes a heartbeat
file: ``starting`` when the run begins (before the model and data are built), then after every finished step.
The watchdog polls it:

- no finished step for ``hang_timeout_s`` (``startup_timeout_s`` before the first one, so model and data loading
  and the first compile are covered): a ``hang`` event and
  alert, then SIGTERM to the trainer (which ends with a clear error) and SIGKILL after ``term_grace_s``
  (unless it answers with a ``restarting`` heartbeat: ``guard.restart_on_hang``, it resumes by itself);
- the trainer process gone without a clean end (``finished``/``failed``/``preempted`` heartbeat): a ``crashed`` event and
  alert with the last step and metrics (SIGKILL, the OOM killer, a segfault);
- a clean end: it exits quietly.

A process of its own (its own session) so that it outlives a killed or stuck trainer; it sends alerts
itself (e-mail, webhook; W&B lives in the trainer).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kamado.folders import pid_alive
from kamado.manifest import write_json_atomic

CLEAN_END = ("finished", "failed", "preempted")  # heartbeat states of a trainer that ended by itself


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _say(msg: str) -> None:
    print(f"kamado watchdog: {msg}", file=sys.stderr, flush=True)


def watch(spec: dict[str, Any], poll_s: float | None = None) -> str:
    """Watch until the trainer ends; returns ``finished``, ``failed``, ``preempted``, ``crashed`` or ``hang``."""
    from kamado.monitor.alerts import Alerter, AlertsConfig
    from kamado.monitor.guard import EventLog

    pid = int(spec["pid"])
    hb_path = Path(spec["heartbeat"])
    events = EventLog(Path(spec["events"]))
    alerter = Alerter(AlertsConfig.model_validate(spec.get("alerts") or {}), run=spec.get("run", ""), sync=True,
                      on_failure=lambda d: events.log(None, "alert_failed", d))
    hang_s = float(spec.get("hang_timeout_s", 1800))
    start_s = float(spec.get("startup_timeout_s", 1800))
    poll = poll_s if poll_s is not None else max(0.2, min(2.0, hang_s / 20))
    t0 = time.time()
    while True:
        hb = _read(hb_path) or {}
        state = hb.get("state", "starting")
        if state in CLEAN_END:
            return state
        if not pid_alive(pid):
            time.sleep(0.5)  # the trainer may have written its last heartbeat just before exiting
            hb = _read(hb_path) or hb
            if hb.get("state") in CLEAN_END:
                return str(hb["state"])
            step = hb.get("step")
            msg = f"the trainer (pid {pid}) died without a clean end after step {step}"
            _say(msg)
            events.log(step, "crashed", {"pid": pid, "by": "watchdog", "metrics": hb.get("metrics", {})})
            alerter.send("crashed", step, msg + " (killed: SIGKILL, out of memory, or a native crash)",
                         action="nothing to do: resume with the same command (the last checkpoint is kept)",
                         checkpoint=hb.get("checkpoint"), metrics=hb.get("metrics"))
            return "crashed"
        limit = start_s if state == "starting" else hang_s
        idle = time.time() - float(hb.get("time", t0))
        if idle > limit:
            _hang(pid, hb, hb_path, idle, limit, float(spec.get("term_grace_s", 15)), events, alerter)
            return "hang"
        time.sleep(poll)


def _hang(pid: int, hb: dict[str, Any], hb_path: Path, idle: float, limit: float, grace: float, events: Any,
          alerter: Any) -> None:
    """A hang: event, alert, the reason for the trainer (``.watchdog-stop``), SIGTERM, SIGKILL after ``grace``."""
    step = hb.get("step")
    if hb.get("state", "starting") == "starting":
        msg = (f"no training step finished {idle:.0f} s after the start (building the model and data, setup, "
               f"first step; guard.startup_timeout_s={limit:g}); stopping the trainer (pid {pid})")
    else:
        msg = (f"no training step finished for {idle:.0f} s after step {step} (guard.hang_timeout_s="
               f"{limit:g}); stopping the trainer (pid {pid})")
    _say(msg)
    events.log(step, "hang", {"pid": pid, "idle_s": round(idle, 1), "timeout_s": limit,
                              "metrics": hb.get("metrics", {})})
    alerter.send("hang", step, f"hang: {msg}", action="SIGTERM to the trainer, SIGKILL after "
                 f"{grace:g} s; resume from the last checkpoint", checkpoint=hb.get("checkpoint"),
                 metrics=hb.get("metrics"))
    try:
        (hb_path.parent / ".watchdog-stop").write_text(msg, encoding="utf-8")
    except OSError:
        pass
    restarting = _stop(pid, grace, hb_path)
    events.log(step, "stopped", {"pid": pid, "by": "watchdog", "alive": pid_alive(pid)}
               | ({"restarting": True} if restarting else {}))


def _stop(pid: int, grace: float, hb_path: Path | None = None) -> bool:
    """SIGTERM, then SIGKILL after ``grace`` s; True when the trainer answered with a ``restarting`` heartbeat
    (``guard.restart_on_hang``: it stopped the stuck step itself and resumes from its last checkpoint)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        t_end = time.time() + wait
        while time.time() < t_end:
            if not pid_alive(pid):
                return False
            if hb_path is not None and (_read(hb_path) or {}).get("state") == "restarting":
                return True
            time.sleep(0.2)
    return False


class Watchdog:
    """The trainer's side: the heartbeat file and the watchdog process (rank 0 only; elsewhere a no-op)."""

    def __init__(self, out_dir: Path, *, enabled: bool = True) -> None:
        self.out_dir, self.enabled = Path(out_dir), enabled
        self.heartbeat = self.out_dir / "heartbeat.json"
        self._proc: subprocess.Popen[bytes] | None = None

    def beat(self, state: str, step: int | None, **extra: Any) -> None:
        """Write the heartbeat: ``state`` (starting, running, finished, failed, preempted, restarting) at ``step``."""
        if self.enabled:
            from kamado.jsonl import to_json_safe

            write_json_atomic(self.heartbeat, to_json_safe({"pid": os.getpid(), "state": state, "step": step,
                                                     "time": time.time(), **extra}, nonfinite="string"))

    def start(self, *, events: Path, hang_timeout_s: float, startup_timeout_s: float, term_grace_s: float,
              run: str, alerts: dict[str, Any]) -> None:
        """Start the watchdog process for this process (after a ``starting`` heartbeat)."""
        if not self.enabled:
            return
        spec = {"pid": os.getpid(), "heartbeat": str(self.heartbeat), "events": str(events),
                "hang_timeout_s": hang_timeout_s, "startup_timeout_s": startup_timeout_s,
                "term_grace_s": term_grace_s, "run": run, "alerts": alerts}
        path = self.out_dir / ".watchdog.json"
        write_json_atomic(path, spec)
        self._proc = subprocess.Popen([sys.executable, "-m", "kamado.monitor.watchdog", str(path)],
                                      start_new_session=True, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        """Wait for the watchdog to exit (it does by itself after a clean-end heartbeat), else terminate it."""
        p, self._proc = self._proc, None
        if p is not None:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.terminate()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kamado.monitor.watchdog SPEC.json", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the trainer; we report what follows
    spec = json.loads(Path(args[0]).read_text())
    watch(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
