"""Metric sinks: ``metrics.jsonl`` always (one JSON object per line); TensorBoard, W&B and MLflow when asked."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from kamado.jsonl import read_jsonl, to_json_safe
from kamado.manifest import write_text_atomic


class JsonlSink:
    """Appends records to a JSON-lines file, flushed every record (so a killed run keeps its log)."""

    def __init__(self, path: Path, truncate_after_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after_step is not None and self.path.exists():
            keep = [ln for ln in read_jsonl(self.path, skip_bad=True) if int(ln.get("step", 0)) <= truncate_after_step]
            write_text_atomic(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))
        elif truncate_after_step is None and self.path.exists():
            self.path.unlink()
        self._f = self.path.open("a", encoding="utf-8")

    def log(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(to_json_safe(record, nonfinite="string"), ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class TensorBoardSink:
    """Scalars to TensorBoard (optional extra)."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._w = SummaryWriter(str(log_dir))

    def log(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        for k, v in record.items():
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                self._w.add_scalar(k, v, step)

    def close(self) -> None:
        self._w.close()


class WandbSink:
    """Weights & Biases (offline unless WANDB_MODE says otherwise)."""

    def __init__(self, project: str, run_dir: Path, config: dict[str, Any] | None = None) -> None:
        import wandb

        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(run_dir))
        self._wandb = wandb
        self._run = wandb.init(project=project, dir=str(run_dir), config=config or {}, reinit=True)

    def log(self, record: dict[str, Any]) -> None:
        self._run.log({k: v for k, v in record.items() if k != "step"}, step=int(record.get("step", 0)))

    def close(self) -> None:
        self._run.finish()


class MlflowSink:
    """MLflow (optional extra ``mlflow``): a run with the training config's scalars as params and every numeric
    record value as a metric at its step. ``tracking_uri`` is an MLflow URI or a local folder (a file store)."""

    def __init__(self, tracking_uri: str, run_dir: Path, config: dict[str, Any] | None = None,
                 experiment: str = "kamado") -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = mlflow_uri(tracking_uri)
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store on request
        self._client = MlflowClient(tracking_uri=uri)
        exp = self._client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else self._client.create_experiment(experiment)
        self._run_id = self._client.create_run(exp_id, run_name=str(run_dir), tags={"kamado.out": str(run_dir)}).info.run_id
        params = [Param(_mlflow_key(k), str(v)[:6000]) for k, v in (config or {}).items()
                  if isinstance(v, str | int | float | bool) or v is None]
        for i in range(0, len(params), 100):
            self._client.log_batch(self._run_id, params=params[i:i + 100])

    def log(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step, now = int(record.get("step", 0)), int(time.time() * 1000)
        ms = [Metric(_mlflow_key(k), float(v), now, step) for k, v in record.items()
              if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)]
        if ms:
            self._client.log_batch(self._run_id, metrics=ms)

    def close(self) -> None:
        self._client.set_terminated(self._run_id)


def mlflow_uri(target: str) -> str:
    """An MLflow tracking URI: a URI as is, a local path as ``file://`` + its absolute path."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) and not re.match(r"^[A-Za-z]:[\\/]", target):
        return target
    return Path(target).expanduser().resolve().as_uri()


def _mlflow_key(k: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", k)  # MLflow names: alphanumerics, _ - . space /


class Sinks:
    """Fan-out to every configured sink; only rank 0 logs."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = sinks

    def log(self, record: dict[str, Any]) -> None:
        for s in self.sinks:
            s.log(record)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def make_sinks(out_dir: Path, *, resume_step: int | None, tensorboard: bool = False, wandb: str | None = None,
               mlflow: str | None = None, config: dict[str, Any] | None = None, enabled: bool = True) -> Sinks:
    """``metrics.jsonl`` in ``out_dir`` (records after ``resume_step`` dropped on resume) plus optional sinks."""
    if not enabled:
        return Sinks([])
    sinks: list[Any] = [JsonlSink(Path(out_dir) / "metrics.jsonl", truncate_after_step=resume_step)]
    if tensorboard:
        sinks.append(TensorBoardSink(Path(out_dir) / "tensorboard"))
    if wandb:
        sinks.append(WandbSink(wandb, Path(out_dir), config))
    if mlflow:
        sinks.append(MlflowSink(mlflow, Path(out_dir), config))
    return Sinks(sinks)
