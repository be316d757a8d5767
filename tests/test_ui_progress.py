"""Progress output: plain lines when nothing is attached to a terminal, bars counting the right totals."""

from __future__ import annotations

import io
import re
import time
from types import SimpleNamespace

import pytest


@pytest.fixture
def plain(monkeypatch):
    """Progress into a string buffer, as a redirected run sees it (not a terminal)."""
    from rich.console import Console

    from kamado import ui

    buf = io.StringIO()
    monkeypatch.setattr(ui, "console", Console(file=buf, stderr=False, force_terminal=False, force_jupyter=False))
    monkeypatch.delenv("KAMADO_QUIET", raising=False)
    monkeypatch.delenv("KAMADO_PROGRESS", raising=False)
    monkeypatch.setenv("KAMADO_PROGRESS_EVERY", "0.2")
    return buf


def test_redirected_training_progress_prints_step_loss_rate_eta(plain):
    from kamado import ui

    assert ui.progress_mode() == "plain"
    with ui.progress("pretrain", total=30) as advance:
        advance(0)
        for i in range(30):
            time.sleep(0.025)
            advance(1, loss=f"{5 - i * 0.1:.3f}", tok_s="5,012")
    lines = plain.getvalue().splitlines()
    steps = [x for x in lines if re.search(r"step.*loss", x)]
    assert lines[0].startswith("[") and "pretrain: started, 30 steps" in lines[0]
    assert len(steps) >= 3  # a timer line every 0.2 s over ~0.75 s, and the last one
    assert all(re.search(r"pretrain: step \d+/30 \(\d+%\) loss=[\d.]+ tok_s=5,012", x) for x in steps)
    assert any("ETA" in x and "step/s" in x for x in steps[:-1])
    assert steps[-1].endswith("done") and "step 30/30 (100%) loss=2.100" in steps[-1]


def test_plain_lines_keep_coming_while_a_step_is_slow(plain):
    """The timer thread prints even when no step finishes (a slow step is visibly not a dead run)."""
    from kamado import ui

    with ui.progress("pretrain", total=2) as advance:
        time.sleep(0.7)
        advance(1, loss="3.0")
    body = plain.getvalue()
    assert body.count("pretrain: step 0/2") >= 2


def test_number_fields_are_summed_with_rates(plain):
    from kamado import ui

    with ui.progress("cleaning", total=2, unit="shards") as advance:
        advance(1, docs=1000, bytes=2_000_000)
        advance(1, docs=500, bytes=1_000_000)
    last = plain.getvalue().splitlines()[-1]
    assert "cleaning: shards 2/2 (100%) docs=1,500 (" in last and "3.0 MB (" in last and "MB/s)" in last


def test_modes_from_environment(monkeypatch, plain):
    from kamado import ui

    monkeypatch.setenv("KAMADO_PROGRESS", "off")
    with ui.progress("x", total=3) as advance:
        advance(3)
    assert plain.getvalue() == ""
    monkeypatch.setenv("KAMADO_PROGRESS", "bar")
    assert ui.progress_mode() == "bar"
    monkeypatch.setenv("KAMADO_PROGRESS", "auto")
    monkeypatch.setenv("KAMADO_QUIET", "1")
    assert ui.progress_mode() == "off"
    monkeypatch.setenv("KAMADO_PROGRESS_EVERY", "nonsense")
    assert ui.progress_every() == ui.DEFAULT_EVERY_S


def test_an_error_inside_the_block_still_ends_with_a_line(plain):
    from kamado import ui

    with pytest.raises(RuntimeError), ui.progress("eval", total=4) as advance:
        advance(1)
        raise RuntimeError("boom")
    assert plain.getvalue().splitlines()[-1].endswith("(stopped)")


def test_perplexity_bar_counts_documents_not_windows():
    """The scorer advances per window; the eval bar's total is the number of documents ("74/13" before)."""
    from kamado.eval.perplexity import Doc, _per_doc

    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=2048))
    docs = [Doc("s", "en", list(range(2, 2 + n)), n) for n in (5, 100, 40, 1, 64)]
    seen: list[int] = []
    adv = _per_doc(seen.append, model, docs, bos=1, window=16)
    windows = sum(-(-n // 15) for n in (5, 100, 40, 1, 64))  # bos + n tokens, 15 new tokens a window
    for _ in range(windows):
        adv(1)
    assert sum(seen) == len(docs) and all(x > 0 for x in seen)
    assert _per_doc(None, model, docs, bos=1, window=16) is None


def test_training_line_shows_the_logged_step_after_a_rollback(plain):
    """The trainer's progress callback follows the logged step: a rollback from step 6 to 3 moves the line back,
    so a run of 8 steps ends at 8/8, not 11/8."""
    from kamado.train.callbacks import ProgressLine

    trainer = SimpleNamespace(quiet=False, dist=SimpleNamespace(is_main=True), description="pretrain",
                              cfg=SimpleNamespace(steps=8), step_no=0)
    cb = ProgressLine()
    cb.pre_train(trainer)
    for step in [1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 8]:  # rolled back after step 6 to the checkpoint of step 3
        cb.post_step(trainer, {"step": step, "loss": 2.0, "tokens_per_s": 100.0})
    cb.post_train(trainer, None)
    last = [x for x in plain.getvalue().splitlines() if "step" in x and "loss" in x][-1]
    assert "step 8/8 (100%)" in last and last.endswith("done"), last
