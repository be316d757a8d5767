"""The data catalog: names resolve under the data root; downloads are checksum-verified (local HTTP)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from kamado import catalog
from kamado.config import KamadoError


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on 127.0.0.1 serving a folder."""
    root = tmp_path / "srv"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[assignment]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_every_registered_file_is_present_and_matches(data_root: Path) -> None:
    for ds in catalog.datasets().values():
        p = data_root / ds.path
        assert p.is_file(), ds.name
        assert ds.license, ds.name
        assert p.stat().st_size == ds.size, ds.name


def test_resolve_name_data_prefix_and_missing(data_root: Path, tmp_path: Path) -> None:
    assert catalog.resolve("dolly-ja", data_root).name.startswith("databricks-dolly")
    assert catalog.resolve("data:en_text/alice_in_wonderland.txt", data_root).is_file()
    with pytest.raises(KamadoError, match="no such file"):
        catalog.resolve("nope.jsonl", data_root, tmp_path)


def test_data_root_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAMADO_DATA_ROOT", str(tmp_path))
    assert catalog.default_data_root() == tmp_path.resolve()
    monkeypatch.setenv("KAMADO_DATA_ROOT", str(tmp_path / "missing"))
    with pytest.raises(KamadoError, match="no data root"):
        catalog.data_root()


def test_download_verifies_checksum(http_root: tuple[Path, str], data_root: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    srv, url = http_root
    ds = catalog.datasets()["alice"]
    (srv / ds.path).parent.mkdir(parents=True)
    (srv / ds.path).write_bytes((data_root / ds.path).read_bytes())
    monkeypatch.setenv("KAMADO_DATA_MIRROR", url)
    dest = catalog.download("alice", tmp_path / "root")
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == ds.sha256

    # a corrupted mirror: the download fails and leaves nothing behind
    (srv / ds.path).write_bytes(b"not the book")
    with pytest.raises(KamadoError, match="checksum mismatch"):
        catalog.download("alice", tmp_path / "other")
    assert not (tmp_path / "other" / ds.path).exists()
    assert not list((tmp_path / "other").rglob("*.part"))


def test_download_reports_http_errors(http_root: tuple[Path, str], tmp_path: Path) -> None:
    _, url = http_root
    with pytest.raises(KamadoError, match="download of alice"):
        catalog.download("alice", tmp_path, url=f"{url}/missing.txt")


def test_converted_sets_need_a_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAMADO_DATA_MIRROR", raising=False)
    with pytest.raises(KamadoError, match="no direct download"):
        catalog.download("jcommonsenseqa", tmp_path)
