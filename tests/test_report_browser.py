"""The report's interactive charts, checked in a real browser (headless Chromium): the page loads with no script
error, every chart drew (SVG lines, run events marked), hover/toggle/zoom work, and a screenshot is kept.

The run folders are written here (metrics in the formats the stages write), so the test needs no training.
Chromium is Debian's ``chromium`` (``make test`` installs it when missing); without it the test is skipped.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def _run(root: Path, name: str, steps: int, seed: float, spike: int | None) -> Path:
    run = root / name
    (run / "pretrain").mkdir(parents=True)
    (run / "recipe.json").write_text(json.dumps({"name": name}), encoding="utf-8")
    with open(run / "pretrain" / "metrics.jsonl", "w", encoding="utf-8") as f:
        f.write(json.dumps({"step": 0, "val_loss": 9.0, "tokens": 0}) + "\n")
        for s in range(1, steps + 1):
            loss = 2.5 + 6.5 * math.exp(-s / (60 + seed)) + 0.15 * math.sin(s * (1.3 + seed))
            if spike and spike <= s < spike + 3:
                loss += 3.0
            f.write(json.dumps({"step": s, "loss": loss, "lr": 3e-3 * min(1.0, s / 20), "grad_norm": 1 + 1 / s,
                                "tokens": s * 4096, "tokens_per_s": 5000 + 300 * math.sin(s), "mfu": 0.4,
                                "mix/ja": 0.6, "mix/en": 0.4}) + "\n")
            if s % 100 == 0:
                f.write(json.dumps({"step": s, "val_loss": loss + 0.1, "tokens": s * 4096}) + "\n")
    if spike:
        (run / "pretrain" / "events.jsonl").write_text(
            json.dumps({"step": spike, "kind": "loss_spike", "detail": "loss 6.1 > 3 x median; rolled back"}) + "\n"
            + json.dumps({"step": spike + 5, "kind": "resumed", "detail": {"from_step": spike - 50}}) + "\n"
            + json.dumps({"step": spike + 3, "kind": "rollback", "detail": {"from_step": spike - 20}}) + "\n",
            encoding="utf-8")
    for m in ("full", "lora"):
        (run / "tune" / m).mkdir(parents=True)
        (run / "tune" / m / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "loss": 3.0 - s / 40 + (0.2 if m == "lora" else 0)}) + "\n" for s in range(1, 60)),
            encoding="utf-8")
    return run


def _chromium(*args: str, profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    env = {**os.environ, "HOME": str(profile)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow  # 11 s: headless chromium (test-fast run on a loaded box)
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (make test installs it: apt-get install chromium)")
def test_report_charts_draw_in_headless_chromium(tmp_path, tmp_path_factory):
    from kamado.report.stage import build_report

    a = _run(tmp_path, "base", 600, 0.0, spike=None)
    b = _run(tmp_path, "guarded", 450, 0.4, spike=300)
    doc, counts = build_report([b, a])
    assert counts["plots"] >= 4  # the static PNGs stay (printing, no scripts)
    assert "<script src" not in doc and "http://" not in doc.replace("http://www.w3.org/2000/svg", "")
    page = tmp_path / "report.html"
    page.write_text(doc, encoding="utf-8")
    n_charts = doc.count('class="kc"')
    assert n_charts >= 8

    profile = tmp_path / "chromium-profile"  # inside the test folder, never the system temp or the checkout
    r = _chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri() + "#kc-selftest", profile=profile)
    dom = r.stdout
    assert r.returncode == 0 and "<html" in dom, r.stderr[-2000:]
    console = [x for x in r.stderr.splitlines() if "CONSOLE" in x and re.search(r"error|uncaught", x, re.I)]
    assert not console, console
    html_tag = re.search(r"<html[^>]*>", dom).group(0)  # the script records errors and counts on <html>
    assert "data-kc-errors" not in html_tag, html_tag
    assert f'data-kc-charts="{n_charts}"' in html_tag
    assert dom.count('data-drawn="1"') == n_charts
    assert len(re.findall(r'<path[^>]*class="kc-line', dom)) >= n_charts
    assert dom.count('class="kc-event"') >= 2  # the spike and the resume, on the loss chart
    assert dom.count('class="kc-span"') >= 2  # the rollback's redone steps: on the run's and the compare loss chart
    assert 'data-kc-selftest="hover=true toggle=true zoom=true"' in html_tag

    shot = tmp_path_factory.getbasetemp() / "report-screenshot.png"
    r = _chromium("--window-size=1280,3400", f"--screenshot={shot}", "--virtual-time-budget=5000",
                  page.as_uri() + "#kc-selftest", profile=profile)  # the self-test leaves a tooltip showing
    assert shot.is_file() and shot.stat().st_size > 20_000, r.stderr[-2000:]
    print(f"report screenshot: {shot}")
