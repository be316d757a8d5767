"""The log-likelihood scorer against a straightforward per-choice computation, and a model that knows the answers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kamado.eval.harness import EvalSettings, evaluate_model, load_model
from kamado.eval.scorer import score_choices, score_token_streams
from kamado.eval.tasks import TASKS, build_examples

pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture(scope="module")
def loaded(toy: Path):
    torch.manual_seed(0)
    return load_model(toy)


def naive_loglik(model, tok, ctx: str, cont: str) -> tuple[float, int]:
    """One full forward per choice, continuation tokens = encode(ctx+cont) past the common prefix."""
    c = tok(ctx)["input_ids"]
    w = tok(ctx + cont)["input_ids"]
    k = 0
    while k < min(len(c), len(w)) and c[k] == w[k]:
        k += 1
    k = min(k, len(w) - 1)
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([w])).logits[0].float(), -1)
    return sum(lp[i - 1, w[i]].item() for i in range(k, len(w))), len(w) - k


@pytest.mark.parametrize(("task", "batch_size", "limit"),
                         [("jcommonsenseqa", 1, 3), ("jcommonsenseqa", 4, 5), ("arc-challenge", 3, 4),
                          ("truthfulqa-mc", 2, 2)])
def test_batched_tree_scoring_matches_per_choice_forward(loaded, data_root, task, batch_size, limit):
    model, tok = loaded
    exs, _ = build_examples(TASKS[task], data_root, limit=limit, seed=3)
    got = score_choices(model, tok, [(e.context, e.choices) for e in exs], batch_size=batch_size)
    assert [len(g) for g in got] == [len(e.choices) for e in exs]
    for e, g in zip(exs, got, strict=True):
        for choice, s in zip(e.choices, g, strict=True):
            ref, n = naive_loglik(model, tok, e.context, choice)
            assert s.ntokens == n
            assert s.loglik == pytest.approx(ref, abs=2e-3, rel=1e-4), (task, choice)


def test_scoring_handles_empty_context_and_truncation(loaded):
    model, tok = loaded
    (a, b), = score_choices(model, tok, [("", ["こんにちは", "hello world"])])
    assert a.ntokens >= 1 and b.ntokens >= 1 and a.loglik < 0 and b.loglik < 0
    # a context longer than the window keeps its end: same scores as the context cut by hand
    long_ctx = "。".join(["吾輩は猫である"] * 400)
    (x,), = score_choices(model, tok, [(long_ctx, ["名前はまだ無い"])], max_len=64)
    assert x.ntokens > 0 and math.isfinite(x.loglik)


def test_perplexity_stream_matches_full_forward(loaded):
    model, tok = loaded
    ids = tok("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。", add_special_tokens=False)["input_ids"]
    (r,) = score_token_streams(model, [ids], bos=tok.bos_token_id, window=512)
    full = [tok.bos_token_id, *ids]
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([full])).logits[0].float(), -1)
    ref = -sum(lp[i - 1, full[i]].item() for i in range(1, len(full)))
    assert r.ntokens == len(ids)
    assert r.nll == pytest.approx(ref, rel=1e-4)
    # small windows still score every token exactly once
    (w,) = score_token_streams(model, [ids], bos=tok.bos_token_id, window=8)
    assert w.ntokens == len(ids) and w.nll > 0


@pytest.mark.slow  # 31 s: trains a toy model on the answers (test-fast run on a loaded box)
def test_model_trained_on_the_answers_scores_100_percent(toy, data_root):
    """Teach the toy model the right answers of a few JCommonsenseQA questions: acc must become 1.0."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(toy)
    model = AutoModelForCausalLM.from_pretrained(toy)
    settings = EvalSettings(limit=8, seed=11, fewshot={"jcommonsenseqa": 0})
    exs, _ = build_examples(TASKS["jcommonsenseqa"], data_root, limit=8, seed=11, shots=0)
    before = evaluate_model(model.eval(), tok, ["jcommonsenseqa"], settings, root=data_root)["jcommonsenseqa"]
    seqs = [tok(e.context + e.choices[e.gold])["input_ids"] for e in exs]
    ctx_len = [len(tok(e.context)["input_ids"]) - 1 for e in exs]
    t = max(map(len, seqs))
    x = torch.tensor([s + [tok.pad_token_id] * (t - len(s)) for s in seqs])
    att = torch.tensor([[1] * len(s) + [0] * (t - len(s)) for s in seqs])
    labels = x.masked_fill(att == 0, -100)
    for i, c in enumerate(ctx_len):  # learn the answers only (and not the question text)
        labels[i, :c] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(80):  # one padded batch of the 8 right answers, until memorised
        model(input_ids=x, attention_mask=att, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    after = evaluate_model(model, tok, ["jcommonsenseqa"], settings, root=data_root)["jcommonsenseqa"]
    assert after["n"] == 8
    assert after["acc"] == 1.0, (before, after)
    assert after["acc_stderr"] == 0.0
    assert before["acc"] < 1.0


def test_batched_generation_with_left_padding_matches_alone(loaded):
    """JSQuAD generation runs in left-padded batches: a prompt's greedy completion must not depend on its batch."""
    from kamado.eval.generate import generate

    model, tok = loaded
    short = "吾輩は猫である。"
    longer = "文脈：梅雨（つゆ、ばいう）は、北海道と小笠原諸島を除く日本、朝鮮半島南部、中国の南部から長江流域にかけての沿海部"
    alone = generate(model, tok, [short], max_new_tokens=12)[0]
    together = generate(model, tok, [longer, short], max_new_tokens=12)
    assert together[1].text == alone.text and alone.completion_tokens >= 1
    assert together[1].prompt_tokens == alone.prompt_tokens < together[0].prompt_tokens


def test_perplexity_metrics_per_language_with_intervals_over_documents(loaded):
    from kamado.eval.perplexity import Doc, evaluate_perplexity

    model, tok = loaded
    ja = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。" * 6
    en = "It is a truth universally acknowledged, that a single man in possession of a good fortune. " * 4
    docs = [Doc("ja", "ja", tok(ja, add_special_tokens=False)["input_ids"], len(ja)),
            Doc("en", "en", tok(en, add_special_tokens=False)["input_ids"], len(en))]
    m, details = evaluate_perplexity(model, tok, docs, window=32)
    for lang, d, text in (("ja", details[0], ja), ("en", details[1], en)):
        assert m[f"tokens_{lang}"] == d["tokens"] == len(docs[0 if lang == "ja" else 1].tokens)
        assert m[f"token_ppl_{lang}"] == pytest.approx(math.exp(d["nll"] / d["tokens"]))
        assert m[f"char_ppl_{lang}"] == pytest.approx(math.exp(d["nll"] / len(text)))
        assert m[f"bpc_{lang}"] == pytest.approx(d["nll"] / len(text) / math.log(2))
        assert m[f"docs_{lang}"] == 1 and m[f"bpc_{lang}_ci95"] is None  # one document: no interval
    assert m["tokens"] == m["tokens_ja"] + m["tokens_en"] and m["n"] == 2
    assert m["bpc_ci95"][0] < m["bpc"] < m["bpc_ci95"][1]
