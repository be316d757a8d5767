"""The dolly-ja instruct tasks: the references' answer loss, greedy answers scored against the references, and
the two fixed halves of the held-out records."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kamado.config import KamadoError
from kamado.eval.harness import EvalSettings, evaluate_model, load_model
from kamado.eval.instruct import answer_nll, evaluate_instruct, heldout_chats, instruct_items
from kamado.eval.tasks import expand, get_task


@pytest.fixture(scope="module")
def dolly(data_root: Path) -> list[dict]:
    from kamado.catalog import resolve
    from kamado.jsonl import read_jsonl

    return read_jsonl(resolve("dolly-ja", data_root))


def test_instruct_task_on_a_toy_model(toy: Path, data_root: Path, tmp_path: Path, one_thread: None) -> None:
    model, tok = load_model(toy)
    s = EvalSettings(limit=3, batch_size=2, seed=5, max_new_tokens=4)
    bars: list[list[int]] = []

    @contextmanager
    def progress(name: str, total: int) -> Iterator[Callable[[int], None]]:
        bars.append([total, 0])
        yield lambda n: bars[-1].__setitem__(1, bars[-1][1] + n)

    res = evaluate_model(model, tok, ["dolly-ja-heldout"], s, root=data_root, detail_dir=tmp_path, progress=progress)
    assert bars == [[6, 6]]  # each item once for its answer loss, once generated
    r = res["dolly-ja-heldout"]
    assert r["n"] == 3 and 0.0 <= r["chrf"] <= 100.0 and 0.0 <= r["rouge_l"] <= 100.0
    lines = [json.loads(x) for x in (tmp_path / "dolly-ja-heldout.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 3 and all("reference" in x and "pred" in x for x in lines)
    # the sampled items come from the held-out end of the file (ids are dolly-ja's index field)
    assert all(int(x["id"]) >= 2500 for x in lines)
    # the answer loss: nats per answer token over all items, from the per-item sums in the details
    assert r["answer_tokens"] == sum(x["answer_tokens"] for x in lines) > 0
    assert r["answer_loss"] == pytest.approx(sum(x["answer_nll"] for x in lines) / r["answer_tokens"], rel=1e-5)
    assert math.log(2) < r["answer_loss"] < 2 * math.log(len(tok)) and r["answer_loss_stderr"] > 0
    # instruct_generate: false scores the same answer loss without generating
    s.instruct_generate = False
    bars.clear()
    alone = evaluate_model(model, tok, ["dolly-ja-heldout"], s, root=data_root, detail_dir=None,
                           progress=progress)["dolly-ja-heldout"]
    assert bars == [[3, 3]] and "chrf" not in alone and alone["answer_loss"] == pytest.approx(r["answer_loss"])


def test_answer_loss_is_what_tune_validates(toy: Path, dolly: list[dict], one_thread: None) -> None:
    """The same examples, the same tokens, the same number as kamado.tune.sft.evaluate_loss (tune's
    validation loss); batching and right padding change nothing."""
    from kamado.tune.sft import encode_chat, evaluate_loss, valid_batches

    model, tok = load_model(toy)
    items = heldout_chats(dolly, limit=5, seed=3)
    res, details = evaluate_instruct(model, tok, items, max_new_tokens=1, batch_size=2, generate_answers=False)
    assert "chrf" not in res and "pred" not in details[0]  # generation skipped
    exs = [encode_chat(tok, [*m, {"role": "assistant", "content": ref}]) for _, m, ref in items]
    assert [d["answer_tokens"] for d in details] == [e.targets for e in exs]
    assert len({len(e.ids) for e in exs}) > 1  # items of different lengths share a padded batch
    want = evaluate_loss(model, valid_batches(exs, 1, tok.pad_token_id))
    assert res["answer_loss"] == pytest.approx(want, rel=1e-5)
    one = answer_nll(model, tok, items, batch_size=1)
    assert [n for _, n in one] == [d["answer_tokens"] for d in details]
    assert [a for a, _ in one] == pytest.approx([d["answer_nll"] for d in details], abs=1e-3)


def test_answer_loss_truncates_to_the_context(toy: Path, dolly: list[dict], one_thread: None) -> None:
    from kamado.tune.sft import IGNORE, encode_chat

    model, tok = load_model(toy)
    items = heldout_chats(dolly, limit=2, seed=3)
    full = answer_nll(model, tok, items, batch_size=2)
    ex = encode_chat(tok, [*items[0][1], {"role": "assistant", "content": items[0][2]}])
    cut = len(ex.ids) - 5  # keeps the first answer tokens of item 0 (prompts are at most 200 characters)
    model.config.max_position_embeddings, old = cut, model.config.max_position_embeddings
    try:
        short = answer_nll(model, tok, items, batch_size=2)
    finally:
        model.config.max_position_embeddings = old
    assert short[0][1] == sum(1 for x in ex.labels[:cut] if x != IGNORE) < full[0][1]
    assert 0 < short[0][0] < full[0][0]


def test_heldout_keeps_its_items(dolly: list[dict]) -> None:
    """dolly-ja-heldout (part (0, 1)) gives exactly the items it gave before the parts existed (pinned)."""
    assert get_task("dolly-ja-heldout").part == (0, 1)
    items = heldout_chats(dolly, limit=None, seed=0)
    assert len(items) == 359 and (items[0][0], items[-1][0]) == ("2501", "2999")
    assert hashlib.sha256(repr(items).encode()).hexdigest()[:16] == "786f2b9a14a419db"
    assert [x[0] for x in heldout_chats(dolly, limit=8, seed=1234)] == [
        "2515", "2534", "2670", "2706", "2737", "2882", "2910", "2988"]
    assert hashlib.sha256(repr(heldout_chats(dolly, limit=200, seed=1234)).encode()).hexdigest()[:16] == \
        "cefd7a835968db95"


def test_select_and_report_halves(dolly: list[dict], data_root: Path) -> None:
    assert expand("dolly-ja-select,dolly-ja-report") == ["dolly-ja-select", "dolly-ja-report"]
    everything = instruct_items(get_task("dolly-ja-heldout"), data_root, limit=None, seed=0)
    sel = instruct_items(get_task("dolly-ja-select"), data_root, limit=None, seed=0)
    rep = instruct_items(get_task("dolly-ja-report"), data_root, limit=None, seed=0)
    ids = [int(x[0]) for x in sel + rep]
    assert sel + rep == everything and len(set(ids)) == len(ids)  # disjoint, and together the held-out set
    assert max(int(x[0]) for x in sel) < 2750 <= min(int(x[0]) for x in rep)  # records 2500-2749 / 2750-2999
    assert (len(sel), len(rep)) == (180, 179)
    picked = instruct_items(get_task("dolly-ja-report"), data_root, limit=20, seed=7)
    assert len(picked) == 20 and set(map(repr, picked)) <= set(map(repr, rep))
    from kamado.cli.eval import main_metric

    shown = main_metric("dolly-ja-select", {"answer_loss": 5.0, "answer_loss_stderr": 0.1, "chrf": 1.0, "n": 3})
    assert shown == [("answer_loss", 5.0, 0.1), ("chrf", 1.0, None)]  # the CLI's table shows the instruct metrics
    with pytest.raises(KamadoError, match=r"part \(2, 2\)"):
        heldout_chats(dolly, limit=None, seed=0, part=(2, 2))
