"""Light stand-in stage functions for testing the runner's skip/resume/force logic only.

The real stages are exercised by their own tests and by the end-to-end recipe test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kamado.stage import StageContext


def run(cfg, ctx: StageContext) -> dict:
    log = Path(os.environ["FAKE_STAGE_LOG"])
    with open(log, "a") as f:
        f.write(ctx.name + "\n")
    partial = ctx.out / "partial.txt"
    resumed = partial.is_file()
    if os.environ.get("FAKE_STAGE_CRASH") == ctx.name:
        partial.write_text("half done")
        raise RuntimeError(f"{ctx.name} killed")
    upstream = {k: (v / "result.json").read_text() for k, v in sorted(ctx.inputs.items())}
    (ctx.out / "result.json").write_text(json.dumps({"cfg": cfg.model_dump(mode="json"), "up": upstream,
                                                      "resumed": resumed}))
    return {"resumed": resumed}
