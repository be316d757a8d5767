"""Metric sinks: ``metrics.jsonl`` always (one JSON object per line); TensorBoard and W&B when asked."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from kamado.jsonl import read_jsonl


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class JsonlSink:
    """Appends records to a JSON-lines file, flushed every record (so a killed run keeps its log)."""

    def __init__(self, path: Path, truncate_after_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after_step is not None and self.path.exists():
            keep = [ln for ln in read_jsonl(self.path, skip_bad=True) if int(ln.get("step", 0)) <= truncate_after_step]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))
            os.replace(tmp, self.path)
        elif truncate_after_step is None and self.path.exists():
            self.path.unlink()
        self._f = self.path.open("a", encoding="utf-8")

    def log(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps({k: _clean(v) for k, v in record.items()}, ensure_ascii=False) + "\n")
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
               config: dict[str, Any] | None = None, enabled: bool = True) -> Sinks:
    """``metrics.jsonl`` in ``out_dir`` (records after ``resume_step`` dropped on resume) plus optional sinks."""
    if not enabled:
        return Sinks([])
    sinks: list[Any] = [JsonlSink(Path(out_dir) / "metrics.jsonl", truncate_after_step=resume_step)]
    if tensorboard:
        sinks.append(TensorBoardSink(Path(out_dir) / "tensorboard"))
    if wandb:
        sinks.append(WandbSink(wandb, Path(out_dir), config))
    return Sinks(sinks)
