"""``kamado data``: the data-set registry (list, download) and token packing / mixture commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_cmd(
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Data root to check.")] = None,
) -> None:
    """List the named data sets, their licenses and whether they are present under the data root.

    Example: kamado data list
    """
    from kamado import registry
    from kamado.ui import console, table

    root = registry.default_data_root() if data_root is None else data_root
    rows = []
    for ds in registry.registry().values():
        here = "yes" if root and (root / ds.path).is_file() else "no"
        lic = (ds.license or "").split(" (")[0]
        rows.append([ds.name, ds.path, ds.records, lic, here, "direct" if ds.url else "mirror"])
    console.print(table(f"data sets (root: {root})", ["name", "path", "records", "license", "present", "download"], rows))


@app.command("download")
def download_cmd(
    names: Annotated[list[str], typer.Argument(help="Data set names (see `kamado data list`).")],
    to: Annotated[Path, typer.Option("--to", help="Data root to download into.")] = Path("data"),
    url: Annotated[str | None, typer.Option(help="Download from this URL instead (one name only).")] = None,
) -> None:
    """Download data sets into a data root, verifying each file's SHA-256 before it is kept.

    Example: KAMADO_DATA_MIRROR=https://mirror.example/kamado kamado data download dolly-ja --to data
    """
    from kamado import registry
    from kamado.ui import console

    for n in names:
        p = registry.download(n, to, url=url)
        console.print(f"[green]✓[/] {n} -> {p}")
