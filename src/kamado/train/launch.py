"""Entry point of every torchrun rank: ``python -m kamado.train.launch SPEC.json``.

The spec (written by ``kamado.train.pretrain.run`` or a Slurm script) holds the stage config and the
stage context; each rank rebuilds them and trains its share with FSDP2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kamado.train.launch SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    from kamado.config import KamadoError
    from kamado.stage import DEFAULT_SEED, StageContext
    from kamado.train import distributed
    from kamado.train.config import PretrainConfig
    from kamado.train.pretrain import run_rank

    c = spec["ctx"]
    ctx = StageContext(name=c.get("name", "pretrain"), out=Path(c["out"]),
                       inputs={k: Path(v) for k, v in c.get("inputs", {}).items()},
                       data_root=Path(c["data_root"]) if c.get("data_root") else None, seed=int(c.get("seed", DEFAULT_SEED)),
                       run_dir=Path(c["run_dir"]) if c.get("run_dir") else None,
                       cache_dir=Path(c["cache_dir"]) if c.get("cache_dir") else None,
                       quiet=bool(c.get("quiet")) or int(os.environ.get("RANK", "0")) != 0)
    cfg = PretrainConfig.model_validate(spec["config"])
    try:
        run_rank(cfg, ctx)
    except KamadoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
