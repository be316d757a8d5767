"""Experiments: variants × seeds run into their own folders, unchanged stages are shared, one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kamado.config import ConfigError
from kamado.experiment import expand, run_experiment, split_experiment, summarise

TINY = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"



def _data(**experiment: object) -> dict:
    d = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    d["eval"] = None  # the fake stages write no eval results
    d["report"] = None
    d["experiment"] = experiment
    return d


def test_variants_share_unchanged_stages(fake: Path, tmp_path: Path, data_root: Path) -> None:
    data, exp = split_experiment(_data(
        variants={"en-first": {}, "ja-heavy": {"pretrain.mixture.stages": [{"start": 0.0, "weights": {"ja": 0.9, "en": 0.1}}]}},
        seeds=[1, 2]), "x.yaml")
    out = tmp_path / "exp"
    doc = run_experiment(data, exp, out, source="x.yaml", recipe_dir=TINY.parent, data_root=data_root)
    ran = fake.read_text().split()
    # corpus, tokenizer, data once for everything; pretrain and tune once per variant x seed
    assert ran.count("corpus") == 1 and ran.count("tokenizer") == 1 and ran.count("data") == 1
    assert ran.count("pretrain") == 4 and ran.count("tune") == 4
    for v in ("en-first", "ja-heavy"):
        for s in (1, 2):
            run = out / v / f"s{s}"
            assert (run / "corpus").is_symlink() and (run / "pretrain" / "manifest.json").is_file()
    assert (out / "en-first/s1/data").resolve() == (out / "ja-heavy/s2/data").resolve()
    assert (out / "en-first/s1/pretrain").resolve() != (out / "en-first/s2/pretrain").resolve()
    assert (out / "experiment.md").is_file() and json.loads((out / "experiment.json").read_text())["seeds"] == [1, 2]
    assert {(r["variant"], r["seed"]) for r in doc["runs"]} == {(v, s) for v in ("en-first", "ja-heavy") for s in (1, 2)}
    assert isinstance(doc["wall_s"], float) and set(doc["wall_s_by_variant"]) == {"en-first", "ja-heavy"}

    # a second run of the same experiment does no work
    fake.write_text("")
    run_experiment(data, exp, out, source="x.yaml", recipe_dir=TINY.parent, data_root=data_root)
    assert fake.read_text().split() == []
    # experiment.compare narrows what is compared, not what is tabulated
    assert any(c["metric"] == "pretrain.final_loss" for c in doc["comparisons"])
    data, exp = split_experiment(_data(variants=dict(exp.variants), seeds=[1, 2], compare=["val_loss"]), "x.yaml")
    again = run_experiment(data, exp, out, source="x.yaml", recipe_dir=TINY.parent, data_root=data_root)
    assert fake.read_text().split() == [] and "pretrain.final_loss" in again["summary"]["en-first"]
    assert not any(c["metric"] == "pretrain.final_loss" for c in again["comparisons"])


def test_bad_variant_is_refused_before_work(tmp_path: Path) -> None:
    data, exp = split_experiment(_data(variants={"bad": {"pretrain.train.steps": -5}}), "x.yaml")
    with pytest.raises(ConfigError, match="experiment.variants.bad"):
        expand(data, exp, "x.yaml")
    with pytest.raises(ConfigError, match="experiment.seed_from"):
        split_experiment(_data(variants={"a": {}}, seed_from="nope"), "x.yaml")


def test_summary_mean_and_spread() -> None:
    per = {"a": {1: {"m.bpc_ja": 2.0, "m.bpc_ja_stderr": 0.1}, 2: {"m.bpc_ja": 4.0, "m.bpc_ja_stderr": 0.3}},
           "b": {1: {"m.bpc_ja": 3.0, "m.bpc_ja_stderr": 0.2}}}
    s = summarise(per, ["bpc"])
    assert s["a"]["m.bpc_ja"]["mean"] == 3.0 and abs(s["a"]["m.bpc_ja"]["std"] - 2 ** 0.5) < 1e-9
    assert s["b"]["m.bpc_ja"]["std"] is None and abs(s["b"]["m.bpc_ja"]["stderr"] - 0.2) < 1e-12
    assert "m.bpc_ja_stderr" not in s["a"]


EXPERIMENTS = sorted((TINY.parent / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_shipped_experiment_recipes_validate_and_expand(path: Path, data_root: Path) -> None:
    from kamado.recipe import check_inputs, read_recipe_data

    data, exp = split_experiment(read_recipe_data(path), str(path))
    assert exp is not None and exp.description
    runs = expand(data, exp, str(path))
    seeds = exp.seeds or [data.get("seed")]
    assert set(runs) == set(exp.variants) and len(runs) >= 2
    for by_seed in runs.values():
        assert list(by_seed) == seeds
        for recipe in by_seed.values():
            check_inputs(recipe, path.parent, data_root)  # every data set and chain file resolves


def test_the_four_findings_have_recipes() -> None:
    assert {p.stem for p in EXPERIMENTS} >= {"scaling", "mixture", "cleaning", "full-vs-lora"}


def test_reference_scores_of_answers() -> None:
    from kamado.eval.instruct import chrf, heldout_chats, rouge_l

    assert chrf("東京は日本の首都です", "東京は日本の首都です") == pytest.approx(100.0)
    assert chrf("", "東京") == 0.0 and rouge_l("xyz", "東京") == 0.0
    assert 0 < chrf("日本の首都は東京", "東京は日本の首都です") < 100
    assert rouge_l("abcd", "a b x d") == pytest.approx(75.0)  # LCS "abd" of 4 and 4 characters, spaces ignored
    recs = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)] + [{"instruction": "x" * 500, "output": "y"}]
    items = heldout_chats(recs, limit=None, seed=0, heldout=4)
    assert [ref for _, _, ref in items] == ["a7", "a8", "a9"]  # the last 4 records, the over-long prompt left out


def test_run_metrics_reads_eval_tune_and_pretrain(tmp_path: Path) -> None:
    from kamado.eval.artifacts import EvalArtifact
    from kamado.experiment import run_metrics
    from kamado.manifest import write_json_atomic

    run = tmp_path / "run"
    for stage, counts in (("pretrain", {"val_loss": 5.5, "final_loss": 5.0}), ("tune", {"lora_val_loss_after": 3.2}),
                          ("eval", {})):
        (run / stage).mkdir(parents=True)
        write_json_atomic(run / stage / "manifest.json", {"stage": stage, "status": "complete", "counts": counts,
                                                                  "timings": {"wall_s": 1.0}})
    EvalArtifact(run / "eval", {"pretrain": {"perplexity": {"bpc_ja": 4.5, "bpc_ja_stderr": 0.1, "bpc@aozora": 4.8}},
                                "tune/lora": {"dolly-ja-heldout": {"chrf": 12.5}}}).write()
    m = run_metrics(run)
    assert m["pretrain.val_loss"] == 5.5 and m["tune.lora_val_loss_after"] == 3.2
    assert m["pretrain.perplexity.bpc_ja"] == 4.5 and m["pretrain.perplexity.bpc@aozora"] == 4.8
    assert m["tune/lora.dolly-ja-heldout.chrf"] == 12.5
    assert set(run_metrics(run, ["tune/lora"])) == {"pretrain.val_loss", "pretrain.final_loss", "tune.lora_val_loss_after",
                                                    "tune/lora.dolly-ja-heldout.chrf"}


def test_seeds_vary_training_not_the_evaluation_subset() -> None:
    from kamado.experiment import stage_seeds
    from kamado.recipe import parse_recipe

    d = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    recipe = parse_recipe(d, "tiny.yaml")
    s = stage_seeds(recipe, 7, "pretrain")
    assert s["corpus"] == s["data"] == recipe.seed and s["pretrain"] == s["tune"] == 7
    assert s["eval"] == s["report"] == recipe.seed  # every seed is scored on the same held-out subset
    assert stage_seeds(recipe, 7, "tune")["pretrain"] == recipe.seed


def _eval_run(run: Path, nll: list[float], chars: list[int], extra: float) -> None:
    """A run folder with an eval stage: per-document perplexity details and a loss."""
    import math

    from kamado.eval.artifacts import EvalArtifact
    from kamado.manifest import write_json_atomic

    (run / "eval" / "details" / "pretrain").mkdir(parents=True)
    rows = [{"id": f"ja_wiki:{i}", "source": "ja_wiki", "lang": "ja", "tokens": 10, "chars": c, "nll": x}
            for i, (x, c) in enumerate(zip(nll, chars, strict=True))]
    (run / "eval" / "details" / "pretrain" / "perplexity.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
    write_json_atomic(run / "eval" / "manifest.json", {"stage": "eval", "status": "complete", "counts": {}})
    bpc = sum(nll) / sum(chars) / math.log(2)
    EvalArtifact(run / "eval", {"pretrain": {"perplexity": {"bpc@ja_wiki": bpc, "bpc_ja": bpc,
                                                            "unigram_bpc@ja_wiki": 9.0}}},
                 details={"pretrain": "details/pretrain"}).write()


def test_comparisons_pair_documents_and_seeds(tmp_path: Path) -> None:
    """A variant 0.2 nats/char better on every document is resolved; one that differs by noise is not."""
    import numpy as np

    from kamado.experiment import compare, comparisons_markdown, run_metrics

    rng = np.random.default_rng(1)
    chars = rng.integers(100, 400, 60).tolist()
    per: dict = {}
    dirs: dict = {}
    for v, shift in (("base", 0.0), ("better", -0.2), ("same", 0.0)):
        for s in (1, 2, 3):
            run = tmp_path / v / f"s{s}"
            nll = [c * (2.0 + shift + rng.normal(0, 0.05)) for c in chars]
            _eval_run(run, nll, chars, 0.0)
            per.setdefault(v, {})[s] = run_metrics(run)
            dirs[(v, s)] = run
    comps = compare([("base", "better"), ("base", "same")], per, dirs, ["bpc"])
    by = {(c["variant"], c["metric"]): c for c in comps}
    good = by[("better", "pretrain.perplexity.bpc@ja_wiki")]
    assert good["resolved"] and good["ci95"][1] < 0 and good["documents"] == 60 and len(good["diffs"]) == 3
    assert good["mean"] == pytest.approx(-0.2 / np.log(2), abs=0.02)
    assert not by[("same", "pretrain.perplexity.bpc@ja_wiki")]["resolved"]
    assert all(c["resolved"] == (c["ci95"][0] > 0 or c["ci95"][1] < 0) for c in comps)
    assert not any("unigram" in c["metric"] for c in comps)  # the floor is shown, not compared
    md = comparisons_markdown(comps)
    assert "| base | better |" in md and "not resolved at this budget" in md
    with pytest.raises(ConfigError, match="no variant nope"):
        split_experiment(_data(variants={"a": {}, "b": {}}, comparisons=[["a", "nope"]]), "x.yaml")


def _tuned_run(run: Path, method: str, loss: dict[str, float], tokens: list[int], rng: object) -> None:
    """A run whose eval holds one tuned model's answer losses on two instruction tasks, per example."""
    from kamado.eval.artifacts import EvalArtifact
    from kamado.manifest import write_json_atomic

    d = run / "eval" / "details" / method.replace("/", "_")
    d.mkdir(parents=True)
    results = {}
    for task, per_token in loss.items():
        rows = [{"id": str(i), "answer_nll": n * (per_token + rng.normal(0, 0.05)), "answer_tokens": n}
                for i, n in enumerate(tokens)]
        (d / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        results[task] = {"answer_loss": sum(r["answer_nll"] for r in rows) / sum(tokens)}
    write_json_atomic(run / "eval" / "manifest.json", {"stage": "eval", "status": "complete", "counts": {}})
    EvalArtifact(run / "eval", {method: results}, details={method: f"details/{method.replace('/', '_')}"}).write()


def test_select_on_one_slice_and_compare_the_chosen_on_another(tmp_path: Path) -> None:
    """Each group's variant is chosen by its mean loss on the select slice; the chosen full and LoRA runs
    (whose models differ in name: renamed to one) are compared on the report slice, paired by example."""
    import numpy as np

    from kamado.experiment import ExperimentConfig, choose, compare, renamed, run_metrics, selection_markdown

    exp = ExperimentConfig.model_validate({
        "variants": {v: {} for v in ("full-a", "full-b", "lora-a", "lora-b")},
        "rename": {"tune/full.": "tuned.", "tune/lora.": "tuned."},
        "select": {"by": "tuned.dolly-ja-select.answer_loss", "groups": {"full": ["full-a", "full-b"],
                   "lora": ["lora-a", "lora-b"]}, "compare": [["full", "lora"]], "metrics": ["dolly-ja-report"]}})
    rng = np.random.default_rng(3)
    tokens = rng.integers(5, 40, 80).tolist()
    loss = {"full-a": 2.0, "full-b": 1.8, "lora-a": 2.3, "lora-b": 2.1}
    per: dict = {}
    dirs: dict = {}
    for v, x in loss.items():
        for s in (1, 2, 3):
            run = tmp_path / v / f"s{s}"
            method = "tune/full" if v.startswith("full") else "tune/lora"
            _tuned_run(run, method, {"dolly-ja-select": x, "dolly-ja-report": x + 0.1}, tokens, rng)
            per.setdefault(v, {})[s] = renamed(run_metrics(run), exp.rename)
            dirs[(v, s)] = run
    assert "tuned.dolly-ja-report.answer_loss" in per["lora-a"][1]
    sel = choose(exp.select, per)
    assert {g: x["chosen"] for g, x in sel["groups"].items()} == {"full": "full-b", "lora": "lora-b"}
    assert "| full | full-b |" in selection_markdown(sel)
    (row,) = compare([("full-b", "lora-b")], per, dirs, ["dolly-ja-report"], exp.rename)
    assert row["metric"] == "tuned.dolly-ja-report.answer_loss" and row["documents"] == 80
    assert row["resolved"] and row["mean"] == pytest.approx(0.3, abs=0.03) and "examples" in row["interval"]
    with pytest.raises(ValueError, match="no group nope"):
        ExperimentConfig.model_validate({"variants": {"a": {}}, "select": {"by": "x", "groups": {"g": ["a"]},
                                                                         "compare": [["g", "nope"]]}})


def test_a_metric_of_a_shared_stage_is_not_compared(tmp_path: Path) -> None:
    """Two tunings of one base: the base's scores are equal in both runs and come from one stage folder, so they
    are not a comparison (an interval [0, 0] "not resolved" would only add noise rows)."""
    from kamado.experiment import compare

    shared = tmp_path / ".stages" / "pretrain-x"
    shared.mkdir(parents=True)
    dirs, per = {}, {}
    for v, after in (("a", 2.0), ("b", 1.5)):
        for s in (1, 2, 3):
            run = tmp_path / v / f"s{s}"
            run.mkdir(parents=True)
            (run / "pretrain").symlink_to(shared)
            (run / "tune").mkdir()
            dirs[(v, s)] = run
            per.setdefault(v, {})[s] = {"pretrain.x.answer_loss": 3.0, "tune.val_loss_after": after + 0.01 * s}
    rows = compare([("a", "b")], per, dirs, ["loss"])
    assert [r["metric"] for r in rows] == ["tune.val_loss_after"]
