"""Continued pretraining: start from an existing Hugging Face LLaMA model (``pretrain.init_from``).

The model's architecture is its ``config.json``: a ``pretrain.model.preset`` set in the recipe or a
``pretrain.model.overrides`` value that disagrees with it is refused, naming the setting. Every rank loads the
weights itself (safetensors, sharded or not, through ``from_pretrained``), in fp32 like a fresh model.

When the tokenizer has more pieces than the model's vocabulary (an extended tokenizer, ``tokenizer.extend``),
the embedding and output matrices grow: the base rows are kept bit for bit, and each new row is
(``pretrain.new_rows``)
- ``mean``: the mean of every base row (of that matrix), or
- ``decompose``: the mean of the rows of the base pieces the new piece splits into under the base tokenizer
  (the extended SentencePiece model cut back to the base's pieces).
``transformers``' ``resize_token_embeddings(mean_resizing=True)`` samples new rows around the mean with the
base covariance; kamado's rows are deterministic and written here explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kamado.config import KamadoError
from kamado.train.config import PretrainConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

SETTING = "pretrain.init_from"
SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim")


def resolve(init_from: str, recipe_dir: Path | None = None) -> Path:
    """The model folder (relative paths from the recipe's folder); a missing one or one without ``config.json`` is an
    error naming ``pretrain.init_from``."""
    p = Path(init_from).expanduser()
    if not p.is_absolute() and recipe_dir is not None:
        p = recipe_dir / p
    if not p.is_dir():
        raise KamadoError(f"{SETTING}: {p} does not exist (a Hugging Face LLaMA model folder; train one first, "
                          "e.g. `make demo` writes runs/tiny/pretrain/hf)")
    if not (p / "config.json").is_file():
        raise KamadoError(f"{SETTING}: {p} has no config.json (not a Hugging Face model folder)")
    return p


def base_config(path: Path) -> Any:
    """The base model's LlamaConfig; another architecture is an error naming ``pretrain.init_from``."""
    from transformers import AutoConfig

    conf = AutoConfig.from_pretrained(str(path), local_files_only=True)
    if getattr(conf, "model_type", None) != "llama":
        raise KamadoError(f"{SETTING}: {path} holds a {getattr(conf, 'model_type', '?')!r} model; continued "
                          "pretraining takes LLaMA-architecture models")
    return conf


def _value(conf: Any, key: str) -> Any:
    d = conf.to_dict()
    if key in d:
        return d[key]
    if key == "rope_theta":
        return (d.get("rope_parameters") or {}).get("rope_theta")
    return getattr(conf, key, None)


def check_agrees(cfg: PretrainConfig, conf: Any, path: Path) -> None:
    """Refuse a preset set in the recipe, or an override, that disagrees with the base model's config."""
    from kamado.model.presets import PRESETS

    m = cfg.model
    if "preset" in m.model_fields_set:
        preset = PRESETS[m.preset]
        for k in SHAPE_FIELDS:
            if k in preset and preset[k] != _value(conf, k):
                raise KamadoError(f"pretrain.model.preset: {m.preset!r} has {k} {preset[k]}, but the model of "
                                  f"{SETTING} ({path}) has {_value(conf, k)}; the architecture comes from "
                                  f"{SETTING}: drop pretrain.model.preset or name the preset that matches")
    for k, v in m.overrides.items():
        have = _value(conf, k)
        if have != v:
            raise KamadoError(f"pretrain.model.overrides.{k}: {v!r}, but the model of {SETTING} ({path}) has "
                              f"{have!r}; the architecture comes from {SETTING}: drop the override")


def digest(path: Path) -> str:
    """One SHA-256 standing for every file of the model folder (names relative to it)."""
    from kamado.manifest import combined, digest_tree

    return combined(digest_tree(Path(path)))


def info(cfg: PretrainConfig, recipe_dir: Path | None = None) -> dict[str, Any]:
    """What ``pretrain.json`` records about the base model: its folder and digest, and the row initialisation."""
    assert cfg.init_from
    p = resolve(cfg.init_from, recipe_dir)
    return {"path": str(p.resolve()), "digest": digest(p), "new_rows": cfg.new_rows}


def check_tokenizer(path: Path, tokenizer_dir: Path) -> None:
    """When the base folder holds a tokenizer, the run's tokenizer must give every base piece the same id."""
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        return
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(str(path), local_files_only=True).get_vocab()
    new = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True).get_vocab()
    moved = sorted((p for p, i in base.items() if new.get(p) != i), key=base.__getitem__)
    if moved:
        raise KamadoError(f"{SETTING}: the run's tokenizer ({tokenizer_dir}) gives {len(moved):,} of the base "
                          f"model's {len(base):,} pieces another id (e.g. {moved[:3]}); its embeddings would be "
                          f"meaningless: extend the base's tokenizer (tokenizer.extend.base: {path})")


def decompositions(sp_model: bytes, base_size: int, new_ids: range) -> list[list[int]]:
    """For each new id, the ids of the base pieces its text splits into under the base tokenizer (the
    SentencePiece model cut back to its first ``base_size`` pieces)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(sp_model)
    pieces = [p.piece for p in m.pieces]
    del m.pieces[base_size:]
    m.trainer_spec.vocab_size = base_size
    sp = spm.SentencePieceProcessor(model_proto=m.SerializeToString())
    out = []
    for i in new_ids:
        text = pieces[i].replace("\u2581", " ") if i < len(pieces) else ""
        out.append([j for j in sp.encode(text) if j < base_size] if text else [])
    return out


def resize(model: PreTrainedModel, size: int, how: str = "mean", decomp: list[list[int]] | None = None) -> int:
    """Grow the embedding and output matrices to ``size`` rows (base rows copied bit for bit; new rows as
    ``how`` says, see the module doc); returns the number of rows added. A tied output matrix is grown once."""
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    if size <= old:
        return 0
    model.resize_token_embeddings(size, mean_resizing=False)  # copies the base rows; new rows set below
    mats = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != mats[0].data_ptr():
        mats.append(out.weight)
    with torch.no_grad():
        for w in mats:
            base = w[:old].double()
            mean = base.mean(0)
            for j in range(size - old):
                ids = decomp[j] if how == "decompose" and decomp is not None else []
                w[old + j] = (base[ids].mean(0) if ids else mean).to(w.dtype)
    return size - old


def start_model(cfg: PretrainConfig, recipe_dir: Path | None, tokenizer_dir: Path, vocab: int,
                ids: dict[str, int | None], seed: int) -> PreTrainedModel:
    """The base model of ``pretrain.init_from`` in fp32, checked against the recipe and the tokenizer, its
    vocabulary grown to ``vocab`` rows."""
    import torch
    from transformers import LlamaForCausalLM

    assert cfg.init_from
    path = resolve(cfg.init_from, recipe_dir)
    conf = base_config(path)
    check_agrees(cfg, conf, path)
    check_tokenizer(path, tokenizer_dir)
    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="sdpa",
                                             local_files_only=True)
    old = model.get_input_embeddings().weight.shape[0]
    if vocab > old:
        decomp = None
        if cfg.new_rows == "decompose":
            spm_file = Path(tokenizer_dir) / "tokenizer.model"
            if not spm_file.is_file():
                raise KamadoError(f"pretrain.new_rows: decompose needs the SentencePiece model {spm_file}; "
                                  "use new_rows: mean")
            decomp = decompositions(spm_file.read_bytes(), old, range(old, vocab))
        resize(model, vocab, cfg.new_rows, decomp)
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if ids.get(k) is not None:
            setattr(model.config, k, int(ids[k]))  # type: ignore[arg-type]
    return model
