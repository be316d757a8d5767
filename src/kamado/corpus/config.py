"""Config of the corpus stage (owned by the corpus package; composed into the recipe), and filter chains.

A filter chain is a list of steps, each ``{type: ..., name: ..., <parameters>}``; the default
Japanese and English chains below are also shipped as ``recipes/corpus/default-ja.yaml`` and
``recipes/corpus/default-en.yaml`` for users to copy and edit.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from kamado.config import StrictModel


class SourceSpec(StrictModel):
    """One named source of documents: registry names, ``data:`` paths or plain paths."""

    name: str
    lang: Literal["ja", "en", "code", "other"] = "ja"
    inputs: list[str]
    max_docs: int | None = None  # read at most this many documents per source (tiny recipes)


class CorpusConfig(StrictModel):
    """Clean (and deduplicate) every source; output one artifact folder per source."""

    sources: list[SourceSpec]
    chain: str = "default"  # a filter-chain recipe: "default", "default-ja", "default-en" or a YAML path
    dedup: bool = True
    executor: Literal["local", "ray"] = "local"
    workers: int = 2
    ray_address: str | None = None  # an existing Ray cluster (default: start a local one)
    shard_mb: int = 256  # output shard size (uncompressed MB)
    text_doc_kb: int = 32  # plain-text inputs are cut into documents of about this size


class ChainConfig(StrictModel):
    """A filter chain: steps run in order; the first filter that rejects a document decides."""

    name: str = "custom"
    store_measures: bool = True  # keep each filter's measurements in meta.measures (for re-tuning)
    steps: list[dict[str, Any]]


# --------------------------------------------------------------------------------- default chains
BOILERPLATE_JA: dict[str, Any] = {
    "type": "boilerplate_lines", "name": "boilerplate",
    "lines": ["コメント送信", "コメントを送信", "ログイン", "ログアウト", "新規登録", "会員登録", "ページの先頭へ",
              "ページの先頭へ戻る", "ページトップへ", "このページの先頭へ", "トップページへ戻る", "関連記事", "関連記事はこちら",
              "前の記事", "次の記事", "シェアする", "ツイート", "シェア", "いいね!", "はてなブックマーク", "LINEで送る",
              "続きを読む", "もっと見る", "メニュー", "MENU", "閉じる", "検索", "カテゴリー", "アーカイブ", "最近の投稿",
              "最近のコメント", "人気記事", "おすすめ記事", "プロフィール", "スポンサーリンク", "広告", "PR", "Share",
              "Tweet", "Home", "ホーム", "サイトマップ", "利用規約", "プライバシーポリシー", "お問い合わせ",
              "Top", "TOP", "PAGE TOP", "ページトップ"],
    "line_lists": ["warcparser-header-filter", "uzushio-template-sentences"],
    "prefix_lists": ["warcparser-start-filter"],
    "suffix_lists": ["warcparser-end-filter"],
    "keyword_lists": ["hojichar-header-footer-keywords-ja"],
    "prefixes": ["ホーム>", "ホーム >", "ホーム»", "トップ>", "トップ >", "HOME>", "HOME >", "TOP>", "TOP >",
                 "<前の", "< 前の", "<次の", "< 次の", "«前の", "次の記事»"],
    # searched one by one in lines of at most pattern_max_chars; literal alternatives scan fastest
    "patterns": [r"©|[Cc]opyright|COPYRIGHT|\([Cc]\)\s*\d{4}|[Aa]ll [Rr]ights [Rr]eserved|ALL RIGHTS RESERVED",
                 r"(?:投稿|更新|公開)(?:者|日)\s*[:：]?\s*\d{4}[/.\-年]\d{1,2}"],
    "pattern_max_chars": 120,
    "short_line_chars": 25,
}

STEPS_JA: list[dict[str, Any]] = [
    {"type": "length", "name": "too_long", "max_chars": 1_000_000},
    # lines seen in more than max_docs documents of the whole corpus, compared exactly as crawled
    # (counted in a first pass over everything, after the steps before this one: keeping it first
    # makes that pass nearly free)
    {"type": "repeated_lines", "max_docs": 10, "min_chars": 5},
    {"type": "normalize"},
    {"type": "aozora_markup"},
    {"type": "pii", "email": "mask", "url": "remove", "phone": "mask"},
    BOILERPLATE_JA,
    {"type": "length", "min_chars": 100, "max_chars": 500_000},
    {"type": "language", "accept": ["ja"], "min_score": 0.5},
    {"type": "script", "min_japanese": 0.5, "min_hiragana": 0.2, "max_katakana": 0.5, "max_kanji": 0.75,
     "max_digits": 0.3},
    {"type": "sentences", "min_avg_chars": 10, "max_avg_chars": 250, "max_chars": 1000, "max_ellipsis_lines": 0.3,
     "max_chars_per_kuten": 200, "kuten_min_chars": 400},
    {"type": "symbols", "max_symbols": 0.1, "max_hash_ellipsis": 0.1, "max_bullet_lines": 0.9, "unit": "char"},
    {"type": "ng_words", "name": "ng_adult", "max_ratio": 0.01,
     "lists": ["hojichar-adult-keywords-ja", "hojichar-adult-keywords-en", "uzushio-ng-words"]},
    {"type": "ng_words", "name": "ng_discrimination", "max_ratio": 0.01,
     "lists": ["hojichar-discrimination-keywords-ja"]},
    {"type": "ng_words", "name": "ng_ads", "max_ratio": None, "max_hits": 14,
     "lists": ["hojichar-advertisement-keywords-ja"]},
    # Gopher's word n-grams become character n-grams twice as long (a Japanese word is ~2 characters)
    {"type": "repetition", "unit": "char", "max_dup_lines": 0.3, "max_dup_line_chars": 0.2,
     "max_dup_paragraphs": 0.3, "max_dup_paragraph_chars": 0.2,
     "top_ngram": {2: 0.2, 3: 0.18, 4: 0.16},
     "dup_ngram": {10: 0.15, 15: 0.125, 20: 0.10}, "max_units": 10_000},
]

BOILERPLATE_EN: dict[str, Any] = {
    "type": "boilerplate_lines", "name": "boilerplate",
    "lines": ["Share", "Tweet", "Log in", "Login", "Sign up", "Sign in", "Menu", "Home", "Search", "Read more",
              "Related posts", "Leave a comment", "Leave a Reply", "Back to top", "Skip to content", "Subscribe"],
    "patterns": [r"©|[Cc]opyright|COPYRIGHT|[Aa]ll [Rr]ights [Rr]eserved|ALL RIGHTS RESERVED",
                 r"(?i:(cookies?|javascript).*(enable|accept|use))", r"(?i:^(posted|published|updated) (on|by) )"],
    "pattern_max_chars": 120,
    "short_line_chars": 60,
}

STEPS_EN: list[dict[str, Any]] = [
    {"type": "length", "name": "too_long", "max_chars": 1_000_000},
    {"type": "repeated_lines", "max_docs": 10, "min_chars": 10},
    {"type": "normalize"},
    {"type": "pii", "email": "mask", "url": "remove", "phone": "mask"},
    BOILERPLATE_EN,
    {"type": "length", "min_chars": 200, "max_chars": 500_000},
    {"type": "language", "accept": ["en"], "min_score": 0.65},
    {"type": "words", "min_words": 50, "max_words": 100_000, "min_mean_word_len": 3, "max_mean_word_len": 10,
     "min_alpha_words": 0.8, "min_stop_words": 2},
    {"type": "symbols", "max_symbols": 0.1, "max_hash_ellipsis": 0.1, "max_bullet_lines": 0.9, "unit": "word"},
    {"type": "ng_words", "name": "ng_adult", "max_ratio": 0.01, "lists": ["hojichar-adult-keywords-en"]},
    {"type": "repetition", "unit": "word", "max_dup_lines": 0.3, "max_dup_line_chars": 0.2,
     "max_dup_paragraphs": 0.3, "max_dup_paragraph_chars": 0.2,
     "top_ngram": {2: 0.2, 3: 0.18, 4: 0.16},
     "dup_ngram": {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}, "max_units": 20_000},
]


def _split_at_language(steps: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    i = next(i for i, s in enumerate(steps) if s["type"] == "language")
    return steps[: i + 1], steps[i + 1:]


def default_chain(name: str) -> ChainConfig:
    """``default-ja``, ``default-en``, or ``default`` (Japanese and English documents, each by its own
    filters: the English-only steps carry ``lang: en``, the Japanese ones ``lang: ja``)."""
    if name == "default-ja":
        return ChainConfig(name=name, steps=copy.deepcopy(STEPS_JA))
    if name == "default-en":
        return ChainConfig(name=name, steps=copy.deepcopy(STEPS_EN))
    if name == "default":
        head, ja_tail = _split_at_language(copy.deepcopy(STEPS_JA))
        _, en_tail = _split_at_language(copy.deepcopy(STEPS_EN))
        head[-1]["accept"] = ["ja", "en"]
        steps = head
        for lang, tail in (("ja", ja_tail), ("en", en_tail)):
            for s in tail:
                s["name"] = f"{lang}_{s.get('name', s['type'])}"
                s["lang"] = lang
                steps.append(s)
        return ChainConfig(name=name, steps=steps)
    raise KeyError(name)


def load_chain(spec: str | Path, base_dir: Path | None = None) -> tuple[ChainConfig, Path | None]:
    """A built-in chain name or a chain YAML file; returns the chain and the folder its relative paths
    (word lists) are resolved against."""
    import yaml
    from pydantic import ValidationError

    from kamado.config import ConfigError, KamadoError, format_validation_error

    s = str(spec)
    if s in ("default", "default-ja", "default-en"):
        return default_chain(s), None
    p = Path(s).expanduser()
    if not p.is_absolute() and base_dir is not None and not p.is_file():
        p = base_dir / p
    if not p.is_file():
        raise KamadoError(f"{spec}: no such chain file (or use default, default-ja, default-en)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
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
