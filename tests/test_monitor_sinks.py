"""Metric sinks verified for real: what kamado writes is read back with each tool's own reader.

TensorBoard through its ``EventAccumulator``; W&B offline through the run's transaction log (``run-*.wandb``:
wandb 0.31 ships no Python reader, so the log's framing is read here, checksums verified, and every record
decoded with wandb's own protobuf schema ``wandb.proto.wandb_internal_pb2.Record``); MLflow through
``MlflowClient`` against a local file store. Every tool's scratch files stay under the test's folder."""

from __future__ import annotations

import json
import math
import struct
import time
import zlib
from pathlib import Path

import pytest

from kamado.monitor.sinks import make_sinks, mlflow_uri

RECORDS = [{"step": s, "loss": 4.0 / s, "lr": 1e-3 * s, "tokens": 128 * s, "note": "x"} for s in range(1, 6)]
RECORDS.insert(3, {"step": 3, "val_loss": 2.5, "tokens": 384})


def _log(out: Path, **kw) -> None:
    sinks = make_sinks(out, resume_step=None, config={"lr": 1e-3, "steps": 5, "nested": {"a": 1}}, **kw)
    for r in RECORDS:
        sinks.log(r)
    sinks.close()


def _expected(key: str) -> list[tuple[int, float]]:
    return [(r["step"], float(r[key])) for r in RECORDS if key in r]


def test_tensorboard_read_back_with_event_accumulator(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _log(tmp_path, tensorboard=True)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"loss", "lr", "tokens", "val_loss"}  # strings are not scalars
    for key in ("loss", "lr", "val_loss"):
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in _expected(key)]
        assert all(math.isclose(v, w, rel_tol=1e-6) for (_, v), (_, w) in zip(got, _expected(key), strict=True))
    # metrics.jsonl, the sink that is always there, holds the same
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == RECORDS


def wandb_run_log(path: Path, timeout_s: float = 60.0) -> list:
    """The records of a finished offline run, once wandb-core (a separate process, which may still be writing
    after ``run.finish()`` returned) has written its ``exit`` record."""
    t_end = time.time() + timeout_s
    while True:
        recs = wandb_records(path)
        if (recs and recs[-1].WhichOneof("record_type") == "exit") or time.time() > t_end:
            return recs
        time.sleep(0.2)


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def wandb_history(recs: list) -> list[dict]:
    """The history rows (one per step) of a run's records."""
    return [{_key(i): json.loads(i.value_json) for i in r.history.item} for r in recs
            if r.WhichOneof("record_type") == "history"]


def wandb_records(path: Path) -> list:
    """Every record of a W&B transaction log (``run-*.wandb``), decoded with wandb's protobuf schema.

    Format (wandb's LevelDB-style log): a 7-byte header ``:W&B`` + magic 0xBEE1 + version 0, then 32 KiB blocks of
    chunks, each ``crc32 (type byte + data)``, length, type (1 full, 2 first, 3 middle, 4 last) and the data."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (ident, magic, version)
    out, pos, buf, block = [], 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        crc, n, typ = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (n == 0 and typ == 0):  # the rest of a block is padding
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + n]
        if len(chunk) < n:  # a chunk still being written
            break
        assert zlib.crc32(chunk, zlib.crc32(bytes([typ]))) == crc, f"bad checksum at byte {pos}"
        pos, buf = pos + 7 + n, buf + chunk
        if typ in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """W&B offline with every scratch folder (run files, cache, config, artifacts) under the test's folder."""
    pytest.importorskip("wandb")
    scratch = tmp_path / "wandb-home"
    for var, sub in (("WANDB_DIR", "."), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                     ("WANDB_DATA_DIR", "data"), ("WANDB_ARTIFACT_DIR", "artifacts")):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(scratch / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    return scratch


def test_wandb_offline_read_back_from_the_run_log(tmp_path, wandb_env):
    out = tmp_path / "run"
    _log(out, wandb="kamado-test")
    logs = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(logs) == 1, list(out.rglob("*"))
    recs = wandb_run_log(logs[0])
    kinds = [r.WhichOneof("record_type") for r in recs]
    assert kinds[0] == "header" and "run" in kinds and kinds[-1] == "exit"
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    assert run.project == "kamado-test"
    cfg = {_key(i): json.loads(i.value_json) for i in run.config.update}
    assert cfg["lr"] == 1e-3 and cfg["steps"] == 5
    hist = wandb_history(recs)
    # one history row per step: W&B merges records logged at the same step (the val_loss row of step 3)
    assert [h["_step"] for h in hist] == [1, 2, 3, 4, 5]
    for key in ("loss", "lr", "val_loss"):
        got = [(h["_step"], h[key]) for h in hist if key in h]
        assert got and dict(got) == pytest.approx(dict(_expected(key))) and len(got) == len(_expected(key))


def test_mlflow_file_store_read_back_with_the_client(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    _log(tmp_path / "run", mlflow=str(store))
    _log(tmp_path / "run2", mlflow=mlflow_uri(str(store)))  # a second run in the same experiment, by URI
    client = MlflowClient(tracking_uri=mlflow_uri(str(store)))
    exp = client.get_experiment_by_name("kamado")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    run = next(r for r in runs if r.data.tags["kamado.out"] == str(tmp_path / "run"))
    assert run.data.params["lr"] == "0.001" and run.data.params["steps"] == "5" and "nested" not in run.data.params
    for key in ("loss", "lr", "val_loss", "tokens"):
        got = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert got and dict(got) == pytest.approx(dict(_expected(key))) and len(got) == len(_expected(key))
    assert mlflow_uri("file:///x/y") == "file:///x/y" and mlflow_uri("http://h:5000") == "http://h:5000"
    assert all(p.is_relative_to(tmp_path) for p in store.rglob("*"))


def test_all_sinks_from_a_real_tiny_training_run(tmp_path, wandb_env, monkeypatch, one_thread):
    """The Trainer's own config keys (``tensorboard``, ``wandb``, ``mlflow``) write the same loss curve to all
    three tools and metrics.jsonl."""
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_train_guard import Stream, model, tcfg

    from kamado.train.trainer import train

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "run"
    cfg = tcfg(8, tensorboard=True, wandb="kamado-train", mlflow=str(tmp_path / "mlruns"))
    train(model(), Stream(), cfg, out, quiet=True)
    jl = {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r}
    assert sorted(jl) == list(range(1, 9))
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert {e.step: e.value for e in acc.Scalars("loss")} == pytest.approx(jl)
    hist = wandb_history(wandb_run_log(next(out.glob("wandb/offline-run-*/run-*.wandb"))))
    assert {h["_step"]: h["loss"] for h in hist if "loss" in h} == pytest.approx(jl)
    client = MlflowClient(tracking_uri=mlflow_uri(str(tmp_path / "mlruns")))
    run = client.search_runs([client.get_experiment_by_name("kamado").experiment_id])[0]
    assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")} == pytest.approx(jl)
