"""Config of the corpus stage (owned by the corpus package; composed into the recipe), and filter chains.

A filter chain is a list of steps, each ``{type: ..., name: ..., <parameters>}``; the built-in chains
(``default``, ``default-ja``, ``default-en``) are the YAML files under ``src/kamado/resources/chains/``,
which users copy and edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kamado.config import StrictModel
from kamado.corpus.dedup.settings import DedupSettings
from kamado.corpus.io.writers import DEFAULT_FORMAT, ShardFormat
from kamado.folders import FolderName


class SourceSpec(StrictModel):
    """One named source of documents: registry names, ``data:`` paths or plain paths."""

    name: FolderName  # becomes the source's folder (corpus/<name>, data/<name>): one plain folder name
    lang: Literal["ja", "en", "code", "other"] = "ja"
    inputs: list[str]
    max_docs: int | None = Field(None, ge=1, description="Read at most this many input records (tiny recipes).")
    chain: str | None = None  # this source's filter chain (e.g. web-ja, curated-ja); default: the corpus chain
    dedup: bool | None = Field(None, description="Deduplicate this source (true/false); unset: as corpus.dedup "
                               "(the settings are always corpus.dedup's).")
    encoding: str | None = Field(None, description="Encoding of JSONL/text/WET inputs: utf-8 (default; a BOM and "
                                 "CRLF are handled), cp932 (Shift-JIS), euc_jp.")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str | None) -> str | None:
        from kamado.config import KamadoError
        from kamado.corpus.io.encoding import check_encoding

        try:
            return check_encoding(v, "encoding")
        except KamadoError as e:
            raise ValueError(str(e)) from None


class CorpusDedup(DedupSettings):
    """``corpus.dedup``: ``true`` (the default settings), ``false`` (no dedup) or the settings themselves."""

    enabled: bool = Field(True, description="Deduplicate (false: the clean output is the stage's output).")

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, data: Any) -> Any:
        return {"enabled": data} if isinstance(data, bool) else data

    def settings(self) -> DedupSettings:
        """The dedup job's settings (without ``enabled``)."""
        return DedupSettings.model_validate(self.model_dump(exclude={"enabled"}))


class CorpusConfig(StrictModel):
    """Clean (and deduplicate) every source; output one artifact folder per source."""

    sources: list[SourceSpec]
    chain: str = Field("default", description="Filter chain: default (ja+en), default-ja, default-en, or a chain YAML "
                       "(a copy of src/kamado/resources/chains/default-ja.yaml, edited).")
    dedup: CorpusDedup = Field(default_factory=lambda: CorpusDedup(),
                               description="Deduplicate each source's kept documents: true, false, or the settings.")
    executor: Literal["local", "ray"] = Field("local", description="local (process pool over shards) or ray.")
    workers: int = Field(2, ge=1, description="Parallel shard workers (processes or Ray CPUs).")
    ray_address: str | None = Field(None, description="Join this Ray cluster (else start a local one).")
    shard_mb: int = Field(256, ge=1, description="Output shard size (uncompressed MB).")
    split_mb: int = Field(128, ge=0, description="Uncompressed .jsonl inputs larger than this are cleaned as byte "
                          "ranges of about this size (Parquet: runs of row groups), each its own task, so several "
                          "workers share one big file (output unchanged); 0: one task per file.")
    # zstd-compressed JSON lines by default, which every downstream reader (tokenizer, data pack, kamado corpus
    # inspect) takes
    shard_format: ShardFormat = Field(DEFAULT_FORMAT, description="Output shards (clean and dedup kept/rejected): "
                                      "jsonl.zst, jsonl.gz (readable anywhere) or parquet.")
    text_doc_kb: int = Field(32, ge=1, description="Plain-text inputs are cut into documents of about this many KB.")

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, v: list[SourceSpec]) -> list[SourceSpec]:
        names = [s.name for s in v]
        if not names:
            raise ValueError("at least one source is needed")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate source names {dup}: each source needs its own name")
        return v

    @model_validator(mode="before")
    @classmethod
    def _flat_dedup_keys(cls, data: Any) -> Any:
        """The older flat keys (``dedup_threshold: 0.7``, ...) are read as ``dedup: {threshold: 0.7, ...}``."""
        if not isinstance(data, dict) or not any(str(k).startswith("dedup_") for k in data):
            return data
        data = dict(data)
        dedup = data.get("dedup", True)
        dedup = {"enabled": dedup} if isinstance(dedup, bool) else dict(dedup)
        for k in [k for k in data if str(k).startswith("dedup_")]:
            dedup[k[len("dedup_"):]] = data.pop(k)
        data["dedup"] = dedup
        return data


class ChainConfig(StrictModel):
    """A filter chain: steps run in order; the first filter that rejects a document decides."""

    name: str = "custom"
    store_measures: bool = True  # keep each filter's measurements in meta.measures (for re-tuning)
    gzip_level: int = Field(1, ge=0, le=9)  # of kept/rejected .jsonl.gz shards: 1 (ISA-L, ~4x zlib's speed at
    # zlib-1 size) is chosen for throughput; 6 writes ~20% smaller files ~10x slower
    steps: list[dict[str, Any]]

    def normal_form(self) -> str:
        """The character normal form the chain leaves its text in, for the tokenizer to apply as well
        (``kamado.tokenizer.normal``): ``nfkc`` with an ``nfkc`` step, ``nfkc_ja`` with a ``normalize``
        step (NFKC except …‥゛゜), else ``identity``."""
        types = [(s.get("type"), s.get("nfkc", True)) for s in self.steps]
        if any(t == "nfkc" for t, _ in types):
            return "nfkc"
        return "nfkc_ja" if any(t == "normalize" and on for t, on in types) else "identity"


# --------------------------------------------------------------------------------- default chains
DEFAULT_CHAINS = ("default", "default-ja", "default-en", "hojichar-compat", "web-ja", "curated-ja")


def default_chain(name: str) -> ChainConfig:
    """A built-in chain: ``default-ja``, ``default-en``, or ``default`` (Japanese and English documents,
    each by its own filters: the Japanese-only steps carry ``lang: ja``, the English ones ``lang: en``).

    The chain files under ``kamado/resources/chains/`` are their one source."""
    from importlib import resources

    from kamado.config import load_yaml

    if name not in DEFAULT_CHAINS:
        raise KeyError(name)
    text = resources.files("kamado").joinpath(f"resources/chains/{name}.yaml").read_text(encoding="utf-8")
    return ChainConfig.model_validate(load_yaml(text, f"chain {name}"))


def load_chain(spec: str | Path, base_dir: Path | None = None) -> tuple[ChainConfig, Path | None]:
    """A built-in chain name or a chain YAML file; returns the chain and the folder its relative paths
    (word lists) are resolved against."""
    import yaml
    from pydantic import ValidationError

    from kamado.config import ConfigError, KamadoError, format_validation_error, load_yaml

    s = str(spec)
    if s in DEFAULT_CHAINS:
        return default_chain(s), None
    p = Path(s).expanduser()
    if not p.is_absolute() and base_dir is not None and not p.is_file():
        p = base_dir / p
    if not p.is_file():
        raise KamadoError(f"{spec}: no such chain file (or use one of {', '.join(DEFAULT_CHAINS)})")
    try:
        data = load_yaml(p.read_text(encoding="utf-8"), str(p))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if isinstance(data, dict) and "corpus" in data and "steps" not in data:
        raise ConfigError(f"{p}: this is a run recipe; --recipe wants a filter chain (a file with 'steps:')")
    if isinstance(data, dict):
        data.setdefault("name", p.stem)
    try:
        return ChainConfig.model_validate(data), p.parent
    except ValidationError as e:
        raise ConfigError(f"{p}: invalid filter chain\n" + format_validation_error(e)) from None
