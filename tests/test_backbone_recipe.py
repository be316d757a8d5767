"""Recipe validation: unknown keys, wrong types and missing files are caught before any work starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kamado.config import ConfigError
from kamado.recipe import check_inputs, load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny.yaml"


def tiny() -> dict:
    return yaml.safe_load(TINY.read_text(encoding="utf-8"))


def test_tiny_recipe_validates_and_lists_stages(data_root: Path) -> None:
    r = load_recipe(TINY)
    assert r.stages() == ["corpus", "tokenizer", "data", "pretrain", "tune", "eval", "report"]
    check_inputs(r, TINY.parent, data_root)


def test_unknown_top_level_key_is_named() -> None:
    d = tiny()
    d["pretrian_typo_key"] = {"lr": 1}
    with pytest.raises(ConfigError, match=r"pretrian_typo_key: unknown key"):
        parse_recipe(d, "r.yaml")


def test_unknown_nested_key_gives_its_path() -> None:
    d = tiny()
    d["pretrain"]["train"]["optimizer"]["learning_rate"] = 1e-3
    with pytest.raises(ConfigError, match=r"pretrain\.train\.optimizer\.learning_rate: unknown key"):
        parse_recipe(d, "r.yaml")


def test_wrong_type_gives_path_and_expectation() -> None:
    d = tiny()
    d["pretrain"]["train"]["optimizer"]["lr"] = "fast"
    with pytest.raises(ConfigError) as e:
        parse_recipe(d, "r.yaml")
    assert "pretrain.train.optimizer.lr: expected a number (got 'fast')" in str(e.value)


def test_list_index_in_path() -> None:
    d = tiny()
    d["corpus"]["sources"][1]["lang"] = 3
    with pytest.raises(ConfigError, match=r"corpus\.sources\[1\]\.lang"):
        parse_recipe(d, "r.yaml")


def test_missing_input_file_is_reported_with_its_key(tmp_path: Path, data_root: Path) -> None:
    d = tiny()
    d["corpus"]["sources"][0]["inputs"].append("no/such/file.jsonl")
    r = parse_recipe(d, "r.yaml")
    with pytest.raises(ConfigError) as e:
        check_inputs(r, tmp_path, data_root)
    assert "corpus.sources[0].inputs[" in str(e.value) and "no/such/file.jsonl" in str(e.value)


def test_override_sets_nested_value() -> None:
    r = parse_recipe(tiny(), overrides=["pretrain.train.steps=7", "tune.methods=[lora]"])
    assert r.pretrain.train.steps == 7 and r.tune.methods == ["lora"]


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ncorpus: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+"):
        load_recipe(p)


def test_cli_rejects_typo_before_work(tmp_path: Path) -> None:
    d = tiny()
    d["pretrian_typo_key"] = {"lr": 1}
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump(d, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "kamado.cli", "run", str(bad), "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "pretrian_typo_key" in p.stderr + p.stdout
    assert not out.exists(), "no work may start for an invalid recipe"


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path: Path, data_root: Path) -> None:
    from kamado.experiment import split_experiment
    from kamado.recipe import read_recipe_data

    data, _ = split_experiment(read_recipe_data(path), str(path))  # continue-ja.yaml is an experiment too
    r = parse_recipe(data, str(path))
    try:
        check_inputs(r, path.parent, data_root)
    except ConfigError as e:  # a model and tokenizer of another run (make demo) need not exist here
        other_run = ("pretrain.init_from:", "tokenizer.extend.base:")
        assert all(line.startswith(other_run) for line in str(e).splitlines()[1:]), str(e)
    assert r.stages()[0] == "corpus"


def test_unknown_model_preset_is_caught_at_validation() -> None:
    d = tiny()
    d["pretrain"]["model"]["preset"] = "13b"
    with pytest.raises(ConfigError, match=r"pretrain\.model\.preset: .*unknown preset '13b'"):
        parse_recipe(d, "r.yaml")


def test_parse_assignments() -> None:
    from kamado.config import KamadoError, parse_assignments

    assert parse_assignments("ja=0.6,en=0.4", "--weights", float, "ja=1") == {"ja": 0.6, "en": 0.4}
    assert parse_assignments(["a=1", "b=2,"], "--fewshot", int, "a=1") == {"a": 1, "b": 2}
    with pytest.raises(KamadoError, match="--weights 'ja': expected NAME=VALUE"):
        parse_assignments("ja", "--weights", float, "ja=1")
    with pytest.raises(KamadoError, match="'x' is not a valid int"):
        parse_assignments("a=x", "--fewshot", int, "a=1")


# ------------------------------------------------------------ whole-recipe validation (ranges, cross-references)

def _error(d: dict) -> str:
    with pytest.raises(ConfigError) as e:
        parse_recipe(d, "r.yaml")
    return str(e.value)


@pytest.mark.parametrize(("path", "value", "where"), [
    (("pretrain", "train", "steps"), 0, "pretrain.train.steps"),
    (("pretrain", "train", "batch_size"), 0, "pretrain.train.batch_size"),
    (("tune", "train", "steps"), -1, "tune.train.steps"),
    (("tokenizer", "vocab_size"), 10, "tokenizer.vocab_size"),
    (("corpus", "dedup"), {"threshold": 1.5}, "corpus.dedup.threshold"),
    (("eval", "batch_size"), 0, "eval.batch_size"),
    (("data", "valid_fraction"), 1.0, "data.valid_fraction"),
])
def test_out_of_range_values_name_their_path(path: tuple[str, ...], value: object, where: str) -> None:
    d = tiny()
    node = d
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value
    assert where in _error(d)


def test_negative_mixture_weight_is_an_error() -> None:
    d = tiny()
    d["pretrain"]["mixture"]["stages"][1]["weights"]["ja"] = -0.5
    msg = _error(d)
    assert "pretrain.mixture" in msg and "stages[1].weights: weights must be >= 0" in msg


def test_mixture_weight_naming_no_corpus_source() -> None:
    d = tiny()
    d["pretrain"]["mixture"]["stages"][0]["weights"] = {"en": 0.5, "ja_wiki": 0.5}
    msg = _error(d)
    assert "pretrain.mixture.stages[0].weights.ja_wiki: not a corpus source or language" in msg
    assert "corpus sources: ja_web, ja_curated, en; languages: ja" in msg
    d = tiny()
    d["tokenizer"]["weights"] = {"ja": 1.0, "fr": 1.0}
    assert "tokenizer.weights.fr: not a corpus source or language" in _error(d)


def test_model_overrides_are_checked_against_llama_config() -> None:
    d = tiny()
    d["pretrain"]["model"]["overrides"] = {"num_layers": 2}
    msg = _error(d)
    assert "pretrain.model.overrides" in msg and "unknown LlamaConfig field(s) 'num_layers'" in msg
    d["pretrain"]["model"]["overrides"] = {"num_hidden_layers": 0}
    assert "num_hidden_layers must be a positive integer" in _error(d)
    d["pretrain"]["model"]["overrides"] = {"num_hidden_layers": 2, "max_position_embeddings": 128}
    assert "pretrain.train.seq_len: 256 exceeds the model's context 128" in _error(d)
    d["pretrain"]["model"]["overrides"] = {"num_hidden_layers": 2}
    assert parse_recipe(d).pretrain.model.overrides == {"num_hidden_layers": 2}


def test_missing_upstream_section_and_tune_nproc(tmp_path: Path, data_root: Path) -> None:
    from kamado.runner import run_recipe

    d = tiny()
    del d["tokenizer"]
    rec = parse_recipe(d)  # a fragment is a valid recipe (stage subcommands read their own section) ...
    with pytest.raises(ConfigError) as e:  # ... but running it as a whole is refused before any work
        run_recipe(rec, tmp_path / "run", data_root=data_root)
    msg = str(e.value)
    assert "data: needs the 'tokenizer' section" in msg and "pretrain: needs the 'tokenizer' section" in msg
    assert not (tmp_path / "run").exists()
    d = tiny()
    d["tune"]["train"]["nproc"] = 2
    assert "tune.train: " in _error(d) and "instruction tuning runs in one process" in _error(d)


def test_dedup_settings_are_in_the_corpus_config() -> None:
    d = tiny()
    d["corpus"] |= {"dedup": {"threshold": 0.7, "ngram": 7, "num_perm": 64, "bands": 8}}
    r = parse_recipe(d)
    from kamado.corpus.dedup.settings import DedupSettings

    assert r.corpus.dedup.enabled and r.corpus.dedup.settings() == DedupSettings(threshold=0.7, ngram=7, num_perm=64,
                                                                                 bands=8)
    flat = tiny()  # the older flat keys mean the same
    flat["corpus"] |= {"dedup_threshold": 0.7, "dedup_ngram": 7, "dedup_num_perm": 64, "dedup_bands": 8}
    assert parse_recipe(flat).corpus.dedup == r.corpus.dedup
    off = tiny()
    off["corpus"]["dedup"] = False
    assert not parse_recipe(off).corpus.dedup.enabled
    d["corpus"]["sources"][1]["name"] = "ja_web"
    assert "duplicate source names ['ja_web']" in _error(d)
