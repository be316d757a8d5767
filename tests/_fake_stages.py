"""Light stand-in stage functions for testing the runner's skip/resume/force logic only.

The real stages are exercised by their own tests and by the end-to-end recipe test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kamado.stage import StageContext


def main() -> None:
    """``python _fake_stages.py ARGS``: the ``kamado`` command with every stage replaced by :func:`run`."""
    import dataclasses
    import sys

    from kamado import stage as stage_registry

    sys.path.insert(0, str(Path(__file__).parent))
    stage_registry.STAGES = tuple(dataclasses.replace(s, run="_fake_stages:run") for s in stage_registry.STAGES)
    from kamado.cli import main as kamado_main

    kamado_main()


def run(cfg, ctx: StageContext) -> dict:
    log = Path(os.environ["FAKE_STAGE_LOG"])
    with open(log, "a") as f:
        f.write(ctx.name + "\n")
    if os.environ.get("FAKE_STAGE_SLEEP"):  # a run that lasts (two processes on one run folder)
        import time

        time.sleep(float(os.environ["FAKE_STAGE_SLEEP"]))
    partial = ctx.out / "partial.txt"
    resumed = partial.is_file()
    if os.environ.get("FAKE_STAGE_CRASH") == ctx.name:
        partial.write_text("half done")
        raise RuntimeError(f"{ctx.name} killed")
    upstream = {k: (v / "result.json").read_text() for k, v in sorted(ctx.inputs.items())}
    (ctx.out / "result.json").write_text(json.dumps({"cfg": cfg.model_dump(mode="json"), "up": upstream,
                                                      "resumed": resumed}))
    if ctx.name == "pretrain":  # a loss that depends on the config and the seed, for the experiment tables
        loss = 5.0 + 0.01 * ctx.seed + len(json.dumps(cfg.model_dump(mode="json"))) % 7 * 0.1
        return {"resumed": resumed, "final_loss": loss}
    return {"resumed": resumed}


if __name__ == "__main__":
    main()
