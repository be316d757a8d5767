"""Hostile and careless input: kamado deletes only what it wrote, names never become paths outside the run,
recipes are safe YAML with finite numbers, one writer per run folder, content digests at any size.

Real files and real ``kamado`` processes; refusals are exit 2 with a one-line message and nothing changed."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kamado import folders
from kamado.config import ConfigError, KamadoError, load_yaml, parse_assignments
from kamado.recipe import parse_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny.yaml"
FAKE = Path(__file__).resolve().parent / "_fake_stages.py"


def kamado(*args: str | Path, timeout: float = 120, env: dict | None = None, fake: bool = False,
           limit_as: int | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "KAMADO_QUIET": "1", "COLUMNS": "300", **(env or {})}
    cmd = [sys.executable, str(FAKE)] if fake else [sys.executable, "-m", "kamado.cli"]

    def limit() -> None:
        if limit_as:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=e, cwd=ROOT,
                          preexec_fn=limit)


def said(r: subprocess.CompletedProcess) -> str:
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    return " ".join(out.split())


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def tiny(**changes: object) -> dict:
    d = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    for k, v in changes.items():
        node = d
        *parts, last = k.split(".")
        for p in parts:
            node = node[p]
        node[last] = v
    return d


# ------------------------------------------------------------------------------------------ ownership
def test_run_into_a_users_folder_is_refused_and_nothing_changes(tmp_path: Path):
    user = tmp_path / "userproj"
    (user / "corpus").mkdir(parents=True)
    (user / "notes.txt").write_text("precious")
    (user / "corpus" / "thesis.txt").write_text("thesis")
    (user / "recipe.json").write_text('{"mine": 1}')
    before = snapshot(user)
    r = kamado("run", TINY, "--out", user, "--until", "corpus")
    assert r.returncode == 2, said(r)
    assert f"{user} is not empty and was not written by kamado" in said(r)
    assert snapshot(user) == before and not (user / ".kamado").exists()


def test_a_foreign_stage_folder_inside_a_run_is_refused(fake: Path, tmp_path: Path, data_root: Path):
    from kamado import runner

    out = tmp_path / "run"
    rec = parse_recipe(tiny())
    runner.run_recipe(rec, out, data_root=data_root, until="corpus")
    assert json.loads((out / ".kamado").read_text())["kind"] == "run"
    # an old run folder's stage replaced by a user's folder of the same name
    folders.remove(out / "tokenizer")
    (out / "tokenizer").mkdir()
    (out / "tokenizer" / "mine.txt").write_text("mine")
    with pytest.raises(KamadoError, match=r"stage folder \(tokenizer\) .*tokenizer is not empty and was not"):
        runner.run_recipe(rec, out, data_root=data_root, until="tokenizer")
    assert (out / "tokenizer" / "mine.txt").read_text() == "mine"


def test_old_runs_without_a_marker_are_still_kamados(tmp_path: Path):
    run = tmp_path / "old"
    (run / "corpus").mkdir(parents=True)
    (run / "recipe.json").write_text("{}")
    (run / "corpus" / "manifest.json").write_text(json.dumps({"stage": "corpus", "status": "complete", "config": {}}))
    assert folders.is_owned(run) and folders.is_owned(run / "corpus")
    folders.check_ours(run)  # accepted as an --out
    # an experiment folder: experiment.json, variant folders and the shared stage store
    exp = tmp_path / "exp"
    (exp / ".stages" / "corpus-abc").mkdir(parents=True)
    (exp / "raw" / "s1").mkdir(parents=True)
    (exp / "experiment.json").write_text("{}")
    (exp / ".stages" / "corpus-abc" / "manifest.json").write_text(
        json.dumps({"stage": "corpus", "status": "complete", "config": {}}))
    folders.check_ours(exp)
    # a user's manifest.json (not kamado's shape) is not
    user = tmp_path / "web"
    user.mkdir()
    (user / "manifest.json").write_text(json.dumps({"name": "my app", "icons": []}))
    with pytest.raises(KamadoError, match="not written by kamado"):
        folders.check_ours(user)


def test_remove_never_reaches_outside_kamados_folders(tmp_path: Path):
    mine = folders.mark(tmp_path / "run", "run")
    (mine / "stage" / "sub").mkdir(parents=True)
    (mine / "stage" / "sub" / "f.txt").write_text("x")
    user = tmp_path / "user"
    user.mkdir()
    (user / "f.txt").write_text("keep")
    for p in (user, user / "f.txt", tmp_path):
        with pytest.raises(KamadoError, match="refusing to delete"):
            folders.remove(p)
    with pytest.raises(KamadoError, match="refusing to replace"):
        folders.replace(mine / "stage", user)
    # a link kamado made goes, never what it points at
    (mine / "link").symlink_to(user, target_is_directory=True)
    folders.remove(mine / "link")
    assert (user / "f.txt").read_text() == "keep"
    folders.remove(mine / "stage")
    assert not (mine / "stage").exists() and mine.is_dir()


def test_clean_overwrite_never_replaces_a_users_folder(tmp_path: Path, data_root: Path):
    src = tmp_path / "in.jsonl"
    with open(data_root / "ja_web_noisy" / "fineweb2_edu_ja_docs.jsonl", encoding="utf-8") as f:
        src.write_text("".join(next(f) for _ in range(5)), encoding="utf-8")
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.txt").write_text("thesis")
    r = kamado("corpus", "clean", src, "--out", user, "--overwrite", "--workers", "1")
    assert r.returncode == 2, said(r)
    assert "not a kamado corpus folder" in said(r)
    assert snapshot(user) == {"thesis.txt": b"thesis"}


# ------------------------------------------------------------------------------------------ names
@pytest.mark.parametrize("name", ["../escape", "..", ".", "a/b", "/abs", "a\\b", ".hidden", "", " x", "a\0b",
                                  "tab\there", "x" * 201])
def test_names_that_would_be_paths_are_refused(name: str):
    with pytest.raises(KamadoError):
        folders.folder_name(name)
    with pytest.raises(ConfigError, match=r"corpus.sources\[0\].name"):
        parse_recipe(tiny(**{"corpus.sources": [{"name": name, "inputs": ["alice"], "lang": "en"}]}))


@pytest.mark.parametrize("name", ["ja_web", "en", "日本語", "web-2024.v1"])
def test_plain_names_pass(name: str):
    assert folders.folder_name(name) == name


def test_source_named_like_a_path_is_refused_before_any_work(tmp_path: Path):
    d = tiny()
    d["corpus"]["sources"][0]["name"] = "../escape"
    d["tokenizer"]["weights"] = {"../escape": 0.1, "ja_curated": 0.5, "en": 0.4}
    rec = tmp_path / "escape.yaml"
    rec.write_text(yaml.safe_dump(d, allow_unicode=True))
    (tmp_path / "esc").mkdir()
    r = kamado("run", rec, "--out", tmp_path / "esc" / "run", "--until", "corpus")
    assert r.returncode == 2, said(r)
    assert "corpus.sources[0].name" in said(r) and "is a path" in said(r)
    assert list((tmp_path / "esc").iterdir()) == []


def test_recipe_name_cannot_point_outside_runs():
    with pytest.raises(ConfigError, match="recipe name part"):
        parse_recipe(tiny(name="../../victim"))
    assert parse_recipe(tiny(name="mix/variant-a")).name == "mix/variant-a"


# ------------------------------------------------------------------------------------------ YAML and numbers
def bomb(levels: int = 9) -> str:
    rows = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefghijk", "bcdefghijkl", strict=False)]
    return "{" + ", ".join(rows[:levels]) + "}"


def test_alias_bomb_is_refused_at_once_with_little_memory(tmp_path: Path):
    d = tiny()
    d["pretrain"]["model"]["overrides"] = {"rope_scaling": "@BOMB@"}
    rec = tmp_path / "bomb.yaml"
    rec.write_text(yaml.safe_dump(d, allow_unicode=True).replace("'@BOMB@'", bomb()))
    t0 = time.perf_counter()
    r = kamado("run", rec, "--out", tmp_path / "bomb", "--until", "corpus", limit_as=4_000_000 * 1024, timeout=60)
    assert r.returncode == 2, said(r)
    assert "expands to more than" in said(r) and time.perf_counter() - t0 < 10
    assert not (tmp_path / "bomb").exists()


def test_yaml_limits():
    assert load_yaml("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}  # ordinary aliases still work
    with pytest.raises(ConfigError, match="expands to more than"):
        load_yaml(bomb(7))
    with pytest.raises(ConfigError, match="nested deeper"):
        load_yaml("a: " + "[" * 100 + "]" * 100)
    with pytest.raises(ConfigError, match="nested deeper"):
        load_yaml("[" * 50_000 + "]" * 50_000)
    with pytest.raises(ConfigError, match="characters"):
        load_yaml("a: " + "x" * (5 << 20))
    with pytest.raises(ConfigError, match="--set pretrain.model.overrides.x: expands to more than"):
        parse_recipe(tiny(), overrides=["pretrain.model.overrides.x=" + bomb(7)])


def test_nan_mixture_weight_is_refused_before_any_work(tmp_path: Path):
    r = kamado("run", TINY, "--out", tmp_path / "nan", "--set", "pretrain.mixture.weights={ja: .nan, en: 1}")
    assert r.returncode == 2, said(r)
    assert "pretrain.mixture.weights.ja: expected a finite number" in said(r)
    assert not (tmp_path / "nan").exists()


@pytest.mark.parametrize("setting", ["tokenizer.weights={ja_web: .inf, en: 1}", "pretrain.train.optimizer.lr=.nan",
                                     "pretrain.mixture.stages=[{start: 0, weights: {en: -.inf}}]",
                                     "corpus.dedup_threshold=.nan"])
def test_non_finite_numbers_are_refused_everywhere(setting: str):
    with pytest.raises(ConfigError, match="finite number"):
        parse_recipe(tiny(), overrides=[setting])


def test_non_finite_cli_assignments_are_refused():
    with pytest.raises(KamadoError, match="finite number"):
        parse_assignments("ja=nan,en=1", "--weights", float, "ja=0.6,en=0.4")
    assert parse_assignments("ja=0.6,en=0.4", "--weights", float, "") == {"ja": 0.6, "en": 0.4}


# ------------------------------------------------------------------------------------------ one writer
def test_a_second_run_on_a_folder_in_use_is_refused_while_the_first_finishes(tmp_path: Path):
    out = tmp_path / "run"
    log = tmp_path / "calls.log"
    env = {"FAKE_STAGE_LOG": str(log), "FAKE_STAGE_SLEEP": "1.5"}
    cmd = [sys.executable, str(FAKE), "run", str(TINY), "--out", str(out), "--until", "tokenizer"]
    first = subprocess.Popen(cmd, env={**os.environ, "KAMADO_QUIET": "1", **env}, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(300):  # until the first holds the lock (its PID in the lock file)
        if (out / folders.LOCK).is_file() and str(first.pid) in (out / folders.LOCK).read_text():
            break
        time.sleep(0.05)
    r = kamado("run", TINY, "--out", out, "--until", "tokenizer", fake=True, env=env)
    assert r.returncode == 2, said(r)
    assert f"is in use by another kamado run (PID {first.pid} on " in said(r)
    assert first.wait(timeout=120) == 0, first.stdout.read() if first.stdout else ""
    assert log.read_text().split() == ["corpus", "tokenizer"]  # the second ran nothing
    # afterwards the folder is free again
    r = kamado("run", TINY, "--out", out, "--until", "tokenizer", fake=True, env={"FAKE_STAGE_LOG": str(log)})
    assert r.returncode == 0, said(r)
    assert "took over" not in said(r)


def test_a_run_killed_while_holding_the_lock_does_not_block_the_next(tmp_path: Path):
    import signal

    out = tmp_path / "run"
    env = {"FAKE_STAGE_LOG": str(tmp_path / "calls.log"), "FAKE_STAGE_SLEEP": "60"}
    cmd = [sys.executable, str(FAKE), "run", str(TINY), "--out", str(out), "--until", "corpus"]
    first = subprocess.Popen(cmd, env={**os.environ, "KAMADO_QUIET": "1", **env}, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        if (out / folders.LOCK).is_file() and str(first.pid) in (out / folders.LOCK).read_text():
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # no cleanup: the lock file still names it
    first.wait()
    assert str(first.pid) in (out / folders.LOCK).read_text()
    r = kamado("run", TINY, "--out", out, "--until", "corpus", fake=True, env={**env, "FAKE_STAGE_SLEEP": "0"})
    assert r.returncode == 0, said(r)
    assert f"took over the lock of {out} left by PID {first.pid}" in said(r) and "no longer running" in said(r)


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_warning(tmp_path: Path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    out = tmp_path / "run"
    out.mkdir()
    (out / folders.LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then",
                                                "command": "kamado run"}))
    with folders.RunLock(out) as lock:
        assert lock.stale and f"PID {dead.pid}" in lock.stale and "no longer running" in lock.stale
        assert json.loads((out / folders.LOCK).read_text())["pid"] == os.getpid()
    assert (out / folders.LOCK).read_text() == ""  # released: no holder named


# ------------------------------------------------------------------------------------------ integrity
def test_a_flipped_byte_with_the_same_size_and_mtime_is_found(tmp_path: Path):
    from kamado.manifest import digest_files, verify_outputs, write_manifest

    d = tmp_path / "stage"
    d.mkdir()
    big = d / "train.bin"
    big.write_bytes(bytes(range(256)) * 4096)
    write_manifest(d, stage="data", config={})
    st = big.stat()
    with open(big, "r+b") as f:
        f.seek(500_000)
        b = f.read(1)
        f.seek(500_000)
        f.write(bytes([b[0] ^ 1]))
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert big.stat().st_size == st.st_size and big.stat().st_mtime_ns == st.st_mtime_ns
    assert verify_outputs(d) == ["train.bin"]
    assert not any(v.startswith("large:") for v in digest_files([big]).values())


def test_manifests_from_before_content_digests_stay_readable(tmp_path: Path):
    from kamado.manifest import verify_outputs

    d = tmp_path / "old"
    d.mkdir()
    (d / "train.bin").write_bytes(b"x" * 1000)
    man = {"stage": "data", "status": "complete", "config": {}, "outputs": {"train.bin": "large:1000:123"}}
    assert verify_outputs(d, man) == []
    (d / "train.bin").write_bytes(b"x" * 999)
    assert verify_outputs(d, man) == ["train.bin"]


# ------------------------------------------------------------------------------------------ corpus
def test_a_corrupted_zst_among_good_inputs_is_an_error_record_of_that_file(tmp_path: Path, data_root: Path):
    import gzip

    import zstandard

    lines = (data_root / "ja_web_noisy" / "fineweb2_edu_ja_docs.jsonl").read_text(encoding="utf-8").splitlines(True)
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_text("".join(lines[:20]), encoding="utf-8")
    (d / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress("".join(lines[20:40]).encode()))
    zst = zstandard.ZstdCompressor(write_checksum=True)  # as the zstd command writes them
    bad = bytearray(zst.compress("".join(lines[40:60]).encode()))
    for i in range(len(bad) // 2, len(bad) // 2 + 64):
        bad[i] ^= 0xFF
    (d / "c.jsonl.zst").write_bytes(bytes(bad))
    (d / "d.jsonl.gz").write_bytes(gzip.compress("".join(lines[60:80]).encode())[:4000])  # truncated gzip: as before
    for cmd in ("clean", "dedup"):
        out = tmp_path / cmd
        r = kamado("corpus", cmd, d, "--out", out, *(["--workers", "1"] if cmd == "clean" else []))
        stats = json.loads((out / "stats.json").read_text())
        assert stats["input"] == stats["kept"] + stats["rejected"] + stats["errors"], stats
        assert stats["kept"] >= 30  # the good files went on
        errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
        by_file = {Path(e["file"]).name for e in errors}
        assert {"c.jsonl.zst", "d.jsonl.gz"} <= by_file, errors
        assert any("damaged zstd data" in e["error"] for e in errors)
        # clean still exits 2 naming a file none of whose records could be read (the truncated-gzip rule)
        assert r.returncode in (0, 2) and "Traceback" not in r.stderr, said(r)
        if r.returncode == 2:
            assert "c.jsonl.zst" in said(r)


# ------------------------------------------------------------------------------------------ small ones
@pytest.mark.slow  # 28 s: builds a second toy model (test-fast run on a loaded box)
def test_tune_refuses_another_models_tokenizer_before_training(tmp_path: Path, toy: Path):
    import shutil

    from _toy import build_toy_model
    from conftest import CACHE

    other = build_toy_model(CACHE / "toy-vocab2000-v1", vocab_size=2000)
    base = tmp_path / "base"
    shutil.copytree(toy, base)
    for f in other.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy2(f, base / f.name)
    r = kamado("tune", "--base", base, "--data", "dolly-ja", "--method", "full", "--steps", "2", "--max-examples", "40",
               "--seq-len", "128", "--batch-size", "2", "--out", tmp_path / "out")
    assert r.returncode == 2, said(r)
    assert "it is another model's tokenizer" in said(r)
    assert not (tmp_path / "out" / "full").exists()


@pytest.mark.parametrize("args, why", [(["--tasks", ","], "eval.tasks: no task given"),
                                       (["--fewshot", "jcommonsenseqa=-1"], "eval.fewshot.jcommonsenseqa"),
                                       (["--fewshot", "jcommonsenseqa=nan"], "is not a valid int")])
def test_eval_refuses_empty_tasks_and_negative_shots(tmp_path: Path, args: list[str], why: str):
    r = kamado("eval", tmp_path / "no-model-needed", *args, "--out", tmp_path / "ev")
    assert r.returncode == 2, said(r)
    assert why in said(r)
    assert not (tmp_path / "ev").exists()


def test_a_full_disk_while_saving_a_checkpoint_says_so_and_keeps_the_last_one(tmp_path: Path):
    import shutil

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no user namespaces here (unshare -rm): cannot mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    code = """
import sys, torch
from pathlib import Path
from kamado.config import KamadoError
from kamado.train import checkpoint as ck
root = Path(sys.argv[1]) / "checkpoints"
opt = {"state": {}, "param_groups": []}
ck.save(root, 1, {"w": torch.ones(1000)}, opt, {"x": 1})
try:
    ck.save(root, 2, {"w": torch.ones(2_000_000)}, opt, {"x": 1})  # 8 MB on a 2 MB disk
except KamadoError as e:
    print("REFUSED", e)
last = ck.latest(root)
print("LAST", last.name, float(ck.load(last)[0]["w"].sum()), sorted(p.name for p in root.iterdir()))
"""
    r = subprocess.run(["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=2m none "{disk}" && '
                        f'"{sys.executable}" -c \'{code}\' "{disk}"'], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert "REFUSED" in r.stdout, r.stdout + r.stderr[-2000:]
    assert "no space left on device while saving the checkpoint of step 2" in r.stdout
    assert "the last complete checkpoint (step_00000001) is intact" in r.stdout
    assert "LAST step_00000001 1000.0 ['.kamado', 'step_00000001']" in r.stdout  # the partial attempt is gone


def test_rich_markup_never_swallows_text():
    from rich.console import Console

    from kamado.ui import table

    r = kamado("judge", "--help", env={"COLUMNS": "300"})
    assert 'parses "[[rating]]"' in r.stdout
    r = kamado("run", "/nonexistent/[/x]/[bold]r.yaml")
    assert r.returncode == 2 and "error: /nonexistent/[/x]/[bold]r.yaml: no such recipe file" in said(r)
    c = Console(record=True, width=100)
    c.print(table("[[t]]", ["[b]"], [["[[rating]] [/x]"]]))
    text = c.export_text()
    assert "[[rating]] [/x]" in text and "[[t]]" in text and "[b]" in text
