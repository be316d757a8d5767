"""Entry point of every torchrun rank: ``python -m kamado.train.launch SPEC.json``.

The spec (written by ``kamado.train.pretrain.run`` or ``kamado pretrain --write-spec``) holds the stage config
and the stage context; each rank rebuilds them and trains its share with FSDP2. Exit codes: 0 done, 2 an error
for the user, 75 (:data:`kamado.config.EXIT_PREEMPTED`) stopped on a preemption signal with a complete
checkpoint (run it again to resume). ``python -m kamado.train.launch --status SPEC.json`` prints how the run's
latest attempt ended (``finished``, ``preempted``, ``crashed``, ``stopped``; ``started``: running or killed;
``none``): what a batch script needs to decide on a requeue (scripts/slurm/pretrain.sbatch).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--status":
        from kamado.monitor.guard import EVENTS, last_outcome

        print(last_outcome(Path(json.loads(Path(args[1]).read_text())["ctx"]["out"]) / EVENTS) or "none")
        return 0
    if len(args) != 1:
        print("usage: python -m kamado.train.launch [--status] SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    from kamado.config import EXIT_PREEMPTED, KamadoError, Preempted
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
    ok = False
    try:
        run_rank(cfg, ctx)
        ok = True
    except Preempted as e:
        ok = True  # every rank stopped at the same step boundary
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"kamado: {e}", file=sys.stderr, flush=True)
        return EXIT_PREEMPTED
    except KamadoError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        distributed.teardown(ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
