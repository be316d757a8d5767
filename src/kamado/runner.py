"""``kamado run``: run a recipe's stages in order, skipping those whose manifest still matches.

A stage's fingerprint covers its config, the run seed and what its upstream stages produced (their
fingerprints and output digests, and when they finished). A stage directory that holds a complete
manifest with the same fingerprint is skipped; one with a partial attempt under the same fingerprint
is handed back to the stage, which resumes it (pretraining from its last checkpoint, corpus cleaning
from its unfinished shards); an unfinished attempt of other settings is cleared and redone. A finished
result that is redone is never deleted first: it waits in ``<stage>.prev`` until the new result is complete
(a failing stage leaves it there, and a later run whose settings match it puts it back).

The run folder must be new, empty or kamado's (``kamado.folders``): a user's folder is refused before any work,
and every deletion goes through ``folders.remove``. One ``kamado run`` at a time writes a run folder (its lock).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape

from kamado import catalog, folders
from kamado.config import ConfigError, KamadoError
from kamado.manifest import digest_files, digest_json, read_manifest, write_json_atomic, write_manifest
from kamado.recipe import RecipeBase, check_inputs, missing_upstream
from kamado.stage import STAGE_NAMES, StageContext, stage_spec
from kamado.ui import console, table

ATTEMPT = ".attempt.json"


@dataclass
class StageOutcome:
    stage: str
    status: str  # "ran", "skipped", "failed"
    seconds: float
    counts: dict[str, Any]


def _external_inputs(recipe: RecipeBase, stage: str, recipe_dir: Path | None, root: Path | None) -> dict[str, str]:
    """Digests of files a stage reads from outside the run (raw corpus, instruction data, chain file)."""
    spec = stage_spec(stage)
    names = spec.external(recipe.stage_config(stage)) if spec.external else []
    files: list[Path] = []
    for n in names:
        p = catalog.resolve(n, root, recipe_dir)
        files += sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    return {f"{k}": v for k, v in digest_files(files).items()}


def fingerprint(recipe: RecipeBase, stage: str, upstream: dict[str, dict], external: dict[str, str],
                seed: int | None = None) -> str:
    """Identity of a stage's work: config, seed, upstream outputs and external inputs."""
    cfg = recipe.stage_config(stage).model_dump(mode="json")
    ups = {k: [m.get("fingerprint"), m.get("outputs_digest"), m.get("finished_ns")] for k, m in upstream.items()}
    return digest_json({"stage": stage, "config": cfg, "seed": recipe.seed if seed is None else seed, "upstream": ups,
                        "external": sorted(external.values())})


def run_recipe(
    recipe: RecipeBase,
    out: Path,
    *,
    recipe_dir: Path | None = None,
    data_root: Path | None = None,
    until: str | None = None,
    force: str | None = None,
    only: str | None = None,
    seeds: dict[str, int] | None = None,
    store: Path | None = None,
) -> list[StageOutcome]:
    """Run (or skip) each stage of ``recipe`` into ``out/<stage>``; returns what happened to each.

    ``seeds`` overrides the recipe seed for some stages (an experiment varies the seed from training on).
    With ``store``, each stage's folder lives in ``store/<stage>-<fingerprint>`` and ``out/<stage>`` links to
    it, so runs that share a stage's fingerprint (the variants of an experiment) share its work.
    """
    stages = recipe.stages()
    if problems := missing_upstream(recipe):
        raise ConfigError("invalid recipe\n" + "\n".join(problems))
    for flag, val in (("--until", until), ("--force", force), ("--only", only)):
        if val is not None and val not in stages:
            raise KamadoError(f"{flag} {val!r}: not a stage of this recipe (stages: {', '.join(stages)})")
    root = data_root
    if root is None and recipe.data_root:
        root = Path(recipe.data_root).expanduser()
        if not root.is_absolute() and recipe_dir is not None:
            root = recipe_dir / root
    if root is None:
        root = catalog.default_data_root()
    check_inputs(recipe, recipe_dir, root)
    folders.check_ours(out, "--out")  # a user's folder is refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    with folders.RunLock(out) as lock:
        if lock.stale:
            console.print(f"[yellow]warning:[/] {escape(lock.stale)}", highlight=False)
        folders.mark(out, "run", recipe=recipe.name)
        return _run_stages(recipe, out, stages, recipe_dir=recipe_dir, root=root, until=until, force=force,
                           only=only, seeds=seeds, store=store)


def _run_stages(recipe: RecipeBase, out: Path, stages: list[str], *, recipe_dir: Path | None, root: Path | None,
                until: str | None, force: str | None, only: str | None, seeds: dict[str, int] | None,
                store: Path | None) -> list[StageOutcome]:
    cache = out / ".cache"
    write_json_atomic(out / "recipe.json", recipe.model_dump(mode="json"))
    outcomes: list[StageOutcome] = []
    manifests: dict[str, dict] = {}
    forced = False
    for stage in stages:
        forced = forced or stage == force
        if only is not None and stage != only:
            man = read_manifest(out / stage)
            if man is None and STAGE_NAMES.index(stage) < STAGE_NAMES.index(only):
                raise KamadoError(f"--only {only}: upstream stage {stage!r} has not finished in {out}")
            if man is not None:
                manifests[stage] = man
            if STAGE_NAMES.index(stage) > STAGE_NAMES.index(only):
                break
            continue
        upstream = {d: manifests[d] for d in stage_spec(stage).deps if d in manifests}
        external = _external_inputs(recipe, stage, recipe_dir, root)
        seed = (seeds or {}).get(stage, recipe.seed)
        fp = fingerprint(recipe, stage, upstream, external, seed)
        sdir = out / stage
        if store is not None:
            sdir = _link_stage(out / stage, store / f"{stage}-{fp[:16]}")
        folders.check_ours(sdir, f"stage folder ({stage})", itself=True)
        if not forced:
            _restore_previous(sdir, fp)
        man = read_manifest(sdir)
        if man is not None and man.get("fingerprint") == fp and not forced:
            console.print(f"[green]✓[/] {stage}: up to date, skipped ({man.get('timings', {}).get('wall_s', 0):.1f}s "
                          f"when it ran)")
            manifests[stage] = man
            outcomes.append(StageOutcome(stage, "skipped", 0.0, man.get("counts", {})))
        else:
            manifests[stage] = _run_stage(recipe, stage, sdir, fp, upstream, external, out, root, cache, forced,
                                          recipe_dir, seed)
            m = manifests[stage]
            outcomes.append(StageOutcome(stage, "ran", m["timings"]["wall_s"], m.get("counts", {})))
        if stage == until:
            break
    return outcomes


def _run_stage(recipe: RecipeBase, stage: str, sdir: Path, fp: str, upstream: dict[str, dict],
               external: dict[str, str], out: Path, root: Path | None, cache: Path, forced: bool,
               recipe_dir: Path | None, seed: int) -> dict:
    attempt = sdir / ATTEMPT
    prev = None
    if attempt.is_file():
        try:
            prev = json.loads(attempt.read_text()).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            prev = None
    kept = _previous(sdir)
    if read_manifest(sdir) is not None:
        # a finished result that is stale or forced is never deleted before its replacement is complete:
        # it waits in <stage>.prev (put back by a later run whose settings match it again)
        folders.remove(kept)
        folders.replace(sdir, kept)
    elif sdir.exists() and (prev != fp or forced):
        folders.remove(sdir)  # an unfinished attempt of other settings (or forced): start clean
    resuming = sdir.exists()
    folders.mark(sdir, "stage", stage=stage)
    write_json_atomic(attempt, {"fingerprint": fp, "started": time.time()})
    console.rule(f"[bold]{stage}[/]" + (" (resuming)" if resuming else ""))
    ctx = StageContext(name=stage, out=sdir, inputs={d: out / d for d in upstream}, data_root=root,
                       seed=seed, run_dir=out, cache_dir=cache, recipe_dir=recipe_dir)
    t0 = time.perf_counter()
    try:
        counts = stage_spec(stage).run_function()(recipe.stage_config(stage), ctx) or {}
    except BaseException:
        if kept.exists():
            console.print(f"[yellow]{stage}: the previous finished result is kept in {kept}; a later run with the "
                          "settings it was made with puts it back[/]")
        raise
    wall = time.perf_counter() - t0
    attempt.unlink(missing_ok=True)
    inputs = {f"stage:{k}": v.get("outputs_digest", "") for k, v in upstream.items()} | external
    man = write_manifest(sdir, stage=stage, config=recipe.stage_config(stage).model_dump(mode="json"),
                         inputs=inputs, counts=counts, timings={"wall_s": round(wall, 3)}, fingerprint=fp)
    folders.remove(kept)  # replaced by a complete result only now
    return man


def _previous(sdir: Path) -> Path:
    """Where a finished stage result waits while a new attempt replaces it."""
    return sdir.with_name(sdir.name + ".prev")


def _restore_previous(sdir: Path, fp: str) -> None:
    """Put back a kept finished result (``<stage>.prev``) whose fingerprint matches again, replacing an unfinished
    attempt of other settings (a failed run with a bad setting does not cost the earlier result)."""
    kept = _previous(sdir)
    if not kept.is_dir() or read_manifest(sdir) is not None:
        return
    man = read_manifest(kept)
    if man is None or man.get("fingerprint") != fp:
        return
    folders.remove(sdir)
    folders.replace(kept, sdir)
    console.print(f"[green]↺[/] {sdir.name}: put back the finished result kept in {kept.name}")


def _link_stage(link: Path, target: Path) -> Path:
    """Point ``link`` (a run's stage entry) at ``target`` (a shared stage folder); returns ``target``.

    A real folder already at ``link`` is the user's earlier work: it is never deleted, the link is refused.
    """
    folders.mark(target, "stage", stage=link.name)
    rel = Path(os.path.relpath(target, link.parent))
    if link.is_symlink():
        if Path(os.readlink(link)) == rel:
            return target
        folders.remove(link)
    elif link.exists():
        raise KamadoError(f"{link} is a folder, not a link into the experiment's shared stages; move it away "
                          "or use another --out")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(rel, target_is_directory=True)
    return target


def summary_table(outcomes: list[StageOutcome]) -> Any:
    """One row per stage: what happened, how long, and its headline counts."""
    rows = []
    for o in outcomes:
        head = ", ".join(f"{k}={v}" for k, v in list(o.counts.items())[:4] if not isinstance(v, dict | list))
        rows.append([o.stage, o.status, f"{o.seconds:.1f}s", head])
    return table("kamado run", ["stage", "status", "wall", "counts"], rows)
