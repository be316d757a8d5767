"""Nothing lost, nothing silently wrong: real `kamado` processes on real files refuse what would destroy
inputs or give plausible garbage, and print one-line messages (no tracebacks) with exit code 2."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KAMADO = [sys.executable, "-m", "kamado.cli"]


def kamado(*args: str | Path, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "KAMADO_QUIET": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([*KAMADO, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=e,
                          cwd=ROOT)


def no_traceback(r: subprocess.CompletedProcess) -> str:
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    return " ".join(out.split())


def tree_digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(d)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def raw(tmp_path_factory, data_root: Path) -> Path:
    src = data_root / "ja_web_noisy" / "fineweb2_edu_ja_docs.jsonl"
    p = tmp_path_factory.mktemp("raw") / "in.jsonl"
    with open(src, encoding="utf-8") as f:
        p.write_text("".join(next(f) for _ in range(60)), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory, raw: Path) -> Path:
    out = tmp_path_factory.mktemp("clean") / "c"
    r = kamado("corpus", "clean", raw, "--out", out, "--workers", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_dedup_into_its_input_folder_is_refused(cleaned: Path):
    before = tree_digest(cleaned)
    r = kamado("corpus", "dedup", cleaned / "kept", "--out", cleaned)
    assert r.returncode == 2
    assert "is inside the output folder" in no_traceback(r)
    assert tree_digest(cleaned) == before
    r = kamado("corpus", "dedup", cleaned / "kept", "--out", cleaned / "kept" / "sub")
    assert r.returncode == 2 and "inside the input folder" in no_traceback(r)
    assert tree_digest(cleaned) == before


def test_dedup_replaces_only_its_own_earlier_result(cleaned: Path, tmp_path: Path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    r = kamado("corpus", "dedup", cleaned / "kept", "--out", other)
    assert r.returncode == 2 and "holds no earlier dedup result" in no_traceback(r)
    assert (other / "mine.txt").read_text() == "keep me"
    out = tmp_path / "dd"
    for _ in range(2):  # the second run replaces the first result, through an attempt folder
        r = kamado("corpus", "dedup", cleaned / "kept", "--out", out)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (out / "stats.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dd", "other"]


def test_clean_overwrite_over_its_input_is_refused(raw: Path, tmp_path: Path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "in.jsonl").write_bytes(raw.read_bytes())
    r = kamado("corpus", "clean", d / "in.jsonl", "--out", d, "--overwrite")
    assert r.returncode == 2
    assert "is inside the output folder" in no_traceback(r)
    assert (d / "in.jsonl").read_bytes() == raw.read_bytes()
    assert [p.name for p in d.iterdir()] == ["in.jsonl"]


def test_unwritable_out_is_a_message(raw: Path):
    r = kamado("corpus", "clean", raw, "--out", "/proc/kamado-cannot-write")
    assert r.returncode == 2
    assert "--out /proc/kamado-cannot-write: cannot create or write" in no_traceback(r)


@pytest.mark.parametrize(("setting", "words"), [
    ("pretrain.train.steps=-5", "pretrain.train.steps"),
    ("pretrain.train.batch_size=0", "pretrain.train.batch_size"),
    ("tokenizer.vocab_size=10", "tokenizer.vocab_size"),
    ("pretrain.train.steps=[1", "is not valid YAML"),
])
def test_bad_settings_refused_before_work(setting: str, words: str, tmp_path: Path):
    run = tmp_path / "run"
    (run / "pretrain").mkdir(parents=True)
    (run / "pretrain" / "manifest.json").write_text('{"stage": "pretrain"}')
    before = tree_digest(run)
    r = kamado("run", "recipes/tiny.yaml", "--out", run, "--set", setting, timeout=30)
    assert r.returncode == 2
    assert words in no_traceback(r)
    assert tree_digest(run) == before


def test_error_messages_and_exit_codes(tmp_path: Path):
    import json

    from kamado.cli import error_message

    def raised(fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            return e
        raise AssertionError("no error")

    path = tmp_path / "x.json"
    path.write_text("{broken")
    msg, code = error_message(raised(lambda: json.loads(path.read_text())))
    assert code == 2 and "not valid JSON" in msg
    msg, code = error_message(raised(lambda: open(tmp_path / "missing.bin", "rb")))
    assert code == 2 and "missing.bin" in msg
    msg, code = error_message(raised(lambda: [][1]))
    assert code == 1 and "bug" in msg and "--debug" in msg
    from kamado.config import Preempted

    def preempt():
        raise Preempted("preempted by SIGUSR1 after step 7 of 9: saved", step=7)
    msg, code = error_message(raised(preempt))
    assert code == 75 and msg.startswith("preempted by SIGUSR1")  # not a failure: run it again to resume


def test_debug_flag_shows_the_traceback(tmp_path: Path):
    f = tmp_path / "shard.jsonl"
    f.write_text('{"text": "x"}\n')
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stats.json").write_text("{broken")
    r = kamado("corpus", "inspect", tmp_path / "out")
    msg = no_traceback(r)
    assert r.returncode in (1, 2) and "error:" in msg
    r = kamado("corpus", "inspect", tmp_path / "out", "--debug")
    assert "Traceback" in r.stderr


@pytest.fixture(scope="module")
def toy_copy(tmp_path_factory, toy: Path):
    import shutil

    def make(name: str) -> Path:
        d = tmp_path_factory.mktemp("models") / name
        shutil.copytree(toy, d)
        return d
    return make


@pytest.mark.slow  # 21 s: CLI subprocesses on a toy model (test-fast run on a loaded box)
def test_eval_refuses_a_tokenizer_of_another_model(toy_copy, tmp_path: Path, data_root: Path):
    import sentencepiece as spm
    from _toy import save_tokenizer

    from kamado.catalog import resolve

    m = toy_copy("m500")
    (tmp_path / "en.txt").write_text(resolve("wikitext2", data_root).read_text(encoding="utf-8")[:200_000])
    spm.SentencePieceTrainer.train(input=str(tmp_path / "en.txt"), model_prefix=str(tmp_path / "sp"), vocab_size=500,
                                   model_type="unigram", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=3,
                                   minloglevel=2)
    save_tokenizer(tmp_path / "sp.model", m)
    r = kamado("eval", m, "--tasks", "perplexity", "--limit", "5", "--out", tmp_path / "ev")
    assert r.returncode == 2
    assert "the tokenizer has 500 tokens but the model" in no_traceback(r)


@pytest.mark.slow  # 30 s: CLI subprocesses on a toy model (test-fast run on a loaded box)
def test_model_folder_without_complete_weights_is_refused(toy_copy, tmp_path: Path):
    m = toy_copy("broken")
    w = m / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])  # truncated
    r = kamado("eval", m, "--tasks", "perplexity", "--limit", "2", "--out", tmp_path / "ev")
    assert r.returncode == 2 and "damaged weights: model.safetensors" in no_traceback(r)
    w.unlink()
    r = kamado("eval", m, "--tasks", "perplexity", "--limit", "2", "--out", tmp_path / "ev")
    assert r.returncode == 2 and "model folder without weights" in no_traceback(r)


def test_safetensors_checks(tmp_path: Path):
    import torch
    from safetensors.torch import save_file

    from kamado.manifest import sha256_file as file_digest
    from kamado.model.integrity import safetensors_problem

    f = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(10, 10), "b": torch.ones(3, dtype=torch.bfloat16)}, str(f))
    assert safetensors_problem(f) is None and len(file_digest(f)) == 64
    data = f.read_bytes()
    f.write_bytes(data[:-1])
    assert "truncated" in safetensors_problem(f)
    f.write_bytes(data[:5])
    assert "no header" in safetensors_problem(f)
    f.write_bytes(data[:8] + b"x" * (len(data) - 8))
    assert "damaged header" in safetensors_problem(f)


@pytest.mark.slow  # ~23 s (last full run): a real lm-eval run
def test_a_comma_in_a_model_path_injects_nothing_into_lm_eval(toy_copy, tmp_path: Path):
    import json

    pytest.importorskip("lm_eval")
    clean = toy_copy("m,trust_remote_code=True")
    evil = clean.parent / "m"
    import shutil

    shutil.copytree(clean, evil)
    marker = tmp_path / "MARKER"
    c = json.loads((evil / "config.json").read_text())
    c["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil", "AutoConfig": "modeling_evil.EvilConfig"}
    (evil / "config.json").write_text(json.dumps(c))
    (evil / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                           "from transformers import LlamaConfig as EvilConfig, "
                                           "LlamaForCausalLM as Evil\n")
    r = kamado("eval", clean, "--backend", "lm-eval", "--tasks", "arc-easy", "--limit", "2", "--out",
               tmp_path / "ev", timeout=300)
    assert not marker.exists(), "remote code ran"
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("damage", ["truncate", "json", "flip", "missing"])
def test_damaged_newest_checkpoint_falls_back_with_a_warning(tmp_path: Path, damage: str, capfd):
    import torch

    from kamado.train import checkpoint as ckpt

    def save(step: int) -> Path:
        osd = {"state": {0: {"exp_avg": torch.ones(4, 4) * step}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
        return ckpt.save(tmp_path, step, {"w": torch.full((64, 64), float(step))}, osd, {"rng": []}, keep_last=3)

    save(1)
    newest = save(2)
    w = newest / "model.safetensors"
    if damage == "truncate":
        w.write_bytes(w.read_bytes()[:-10])
    elif damage == "json":
        (newest / "state.json").write_text("{broken")
    elif damage == "flip":  # same size, sound header: only the digest recorded at save time sees it
        b = bytearray(w.read_bytes())
        b[-5] ^= 0xFF
        w.write_bytes(bytes(b))
    else:
        w.unlink()
    got = ckpt.latest(tmp_path)
    assert got is not None and got.name == "step_00000001"
    if damage != "missing":  # a step folder without weights is not a complete checkpoint at all
        cap = capfd.readouterr()
        out = " ".join((cap.out + cap.err).split())
        assert "step_00000002 is damaged" in out and "falling back to step_00000001" in out
    assert ckpt.load(got)[0]["w"][0, 0].item() == 1.0
