"""Real Japanese input encodings, all-error inputs, sources left empty by the filters, pack vs tokenizer:
real files written with Python's codecs, real `kamado` processes; every document kept, rejected or an error."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from kamado.config import KamadoError
from kamado.corpus.io.documents import Document, ReadError
from kamado.corpus.io.encoding import guess_encoding
from kamado.corpus.io.readers import read_shard

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["これは日本語の文章です。今日はとても良い天気なので、公園へ散歩に行きました。桜の花がきれいに咲いていました。" * 3,
        "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所で泣いていた。" * 3,
        "東京駅から新幹線に乗って、京都まで旅行しました。お寺や神社をたくさん見て、おいしい料理も食べました。" * 3]


def kamado(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "KAMADO_QUIET": "1", "COLUMNS": "400"}
    r = subprocess.run([sys.executable, "-m", "kamado.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=ROOT)
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    return r


def jsonl(path: Path, encoding: str, newline: str = "\n", bom: bool = False, n: int = 12) -> Path:
    body = "".join(json.dumps({"id": f"{path.stem}-{i}", "text": DOCS[i % 3] + f"（{i}番）"}, ensure_ascii=False)
                   + newline for i in range(n))
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body.encode(encoding))
    return path


def text_file(path: Path, encoding: str, newline: str = "\n") -> Path:
    path.write_bytes((newline * 2).join(d.replace("。", "。" + newline) for d in DOCS).encode(encoding))
    return path


def flat(r: subprocess.CompletedProcess) -> str:
    return " ".join((r.stdout + r.stderr).split())


def test_bom_and_crlf_cost_nothing(tmp_path: Path):
    p = jsonl(tmp_path / "bom.jsonl", "utf-8", "\r\n", bom=True)
    recs = list(read_shard(p))
    assert [type(r) for r in recs] == [Document] * 12  # the BOM used to cost the first document
    assert recs[0].id == "bom-0" and all("\r" not in r.text for r in recs)
    t = text_file(tmp_path / "crlf.txt", "utf-8", "\r\n")
    t.write_bytes(b"\xef\xbb\xbf" + t.read_bytes())
    docs = list(read_shard(t))
    assert [type(d) for d in docs] == [Document] and "\r" not in docs[0].text
    assert docs[0].text.startswith("これは") and "\n\n吾輩は猫" in docs[0].text


def test_legacy_encodings_are_named_and_read_with_encoding(tmp_path: Path):
    sj = jsonl(tmp_path / "sjis.jsonl", "cp932", "\r\n")
    eu = text_file(tmp_path / "euc.txt", "euc_jp")
    assert guess_encoding(sj.read_bytes()) == "cp932" and guess_encoding(eu.read_bytes()) == "euc_jp"
    assert guess_encoding("café au lait, naïve".encode("latin-1")) is None
    errs = list(read_shard(sj))
    assert all(isinstance(e, ReadError) for e in errs) and len(errs) == 12
    assert errs[0].error.endswith("the file looks like Shift-JIS (CP932): pass --encoding cp932")
    assert list(read_shard(eu))[0].error.endswith("the file looks like EUC-JP: pass --encoding euc_jp")
    wrong = list(read_shard(sj, encoding="euc_jp"))[0]
    assert wrong.error.endswith("pass --encoding cp932")
    assert [d.text for d in read_shard(sj, encoding="cp932")][:1] == [DOCS[0] + "（0番）"]
    assert "".join(d.text for d in read_shard(eu, encoding="euc_jp")).startswith("これは日本語")
    utf8 = jsonl(tmp_path / "u.jsonl", "utf-8")
    assert list(read_shard(utf8, encoding="cp932"))[0].error.endswith("the file looks like UTF-8: leave out "
                                                                      "--encoding cp932")


def test_corpus_clean_all_error_input_names_the_file_and_encoding(tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    jsonl(folder / "good.jsonl", "utf-8", "\r\n", bom=True)
    sj = jsonl(folder / "sjis.jsonl", "cp932", "\r\n")
    (folder / "notes.csv").write_text("a,b\n")
    (folder / "readme.md").write_text("# data\n")
    out = tmp_path / "out"
    r = kamado("corpus", "clean", folder, "--out", out, "--workers", "1", "--recipe", "default-ja")
    msg = flat(r)
    assert r.returncode == 2, msg
    assert "2 file(s) with an unsupported extension are not read: notes.csv, readme.md" in msg
    assert f"every record of 1 input file(s) is an error: {sj} (12 lines; line 1: invalid UTF-8" in msg
    assert "the file looks like Shift-JIS (CP932): pass --encoding cp932" in msg
    stats = json.loads((out / "stats.json").read_text())
    assert stats["input"] == 24 == stats["kept"] + stats["rejected"] + stats["errors"] and stats["errors"] == 12

    out2 = tmp_path / "out2"
    r = kamado("corpus", "clean", sj, "--out", out2, "--workers", "1", "--encoding", "cp932")
    assert r.returncode == 0, flat(r)
    stats = json.loads((out2 / "stats.json").read_text())
    assert stats["input"] == 12 == stats["kept"] + stats["rejected"] and stats["errors"] == 0

    r = kamado("corpus", "clean", sj, "--out", tmp_path / "o3", "--encoding", "utf-16")
    assert r.returncode == 2 and "convert UTF-16/32 files to UTF-8 first" in flat(r)
    r = kamado("corpus", "clean", sj, "--out", tmp_path / "o3", "--encoding", "klingon")
    assert r.returncode == 2 and "--encoding 'klingon': unknown encoding" in flat(r)


def test_tokenizer_train_encoding(tmp_path: Path):
    from kamado.corpus.docs import iter_docs, resolve_inputs

    eu = text_file(tmp_path / "euc.txt", "euc_jp")
    r = kamado("tokenizer", "train", eu, "--out", tmp_path / "tok", "--vocab-size", "300")
    assert r.returncode == 2, flat(r)
    assert f"every record of 1 input file(s) is an error: {eu}:1: invalid UTF-8" in flat(r)
    assert "the file looks like EUC-JP: pass --encoding euc_jp" in flat(r)
    docs = [d for s in resolve_inputs([str(eu)], encoding="euc_jp") for d in iter_docs(s)]
    assert docs and docs[0].text.startswith("これは日本語") and docs[0].lang == "ja"


def test_recipe_source_encoding_field():
    from kamado.corpus.config import CorpusConfig

    cfg = CorpusConfig.model_validate({"sources": [{"name": "a", "inputs": ["x"], "encoding": "Shift_JIS"}]})
    assert cfg.sources[0].encoding == "shift_jis"
    with pytest.raises(ValidationError, match="unknown encoding"):
        CorpusConfig.model_validate({"sources": [{"name": "a", "inputs": ["x"], "encoding": "nope"}]})
    with pytest.raises(ValidationError, match="UTF-16/32"):
        CorpusConfig.model_validate({"sources": [{"name": "a", "inputs": ["x"], "encoding": "utf-16"}]})


@pytest.fixture(scope="module")
def corpus_stage(tmp_path_factory, data_root: Path) -> Path:
    """A real corpus stage: a Shift-JIS source read with `encoding: cp932`, and an English source that the
    Japanese chain rejects entirely."""
    from kamado.corpus.config import CorpusConfig
    from kamado.corpus.stage import run
    from kamado.stage import StageContext

    d = tmp_path_factory.mktemp("cstage")
    sj = d / "sjis.jsonl"  # real Japanese web documents (those CP932 can hold), as Shift-JIS with CRLF
    with open(data_root / "ja_web_noisy" / "fineweb2_edu_ja_docs.jsonl", encoding="utf-8") as f, open(sj, "wb") as o:
        n = 0
        for line in f:
            try:
                o.write(line.rstrip("\n").encode("cp932") + b"\r\n")
                n += 1
            except UnicodeEncodeError:
                continue
            if n == 30:
                break
    en = d / "en.jsonl"
    en.write_text("".join(json.dumps({"text": f"An English sentence number {i} that is long enough to be kept "
                                              "by an English chain but not by a Japanese one."}) + "\n"
                          for i in range(20)))
    cfg = CorpusConfig.model_validate({
        "sources": [{"name": "ja_sj", "lang": "ja", "inputs": [str(sj)], "encoding": "cp932"},
                    {"name": "web", "lang": "ja", "inputs": [str(en)], "chain": "default-ja"}],
        "dedup": False, "workers": 1})
    out = d / "corpus"
    out.mkdir()
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        run(cfg, StageContext(name="corpus", out=out, quiet=True))
    (d / "stderr.txt").write_text(buf.getvalue())
    return out


def test_corpus_stage_encoding_and_empty_source_warning(corpus_stage: Path):
    err = " ".join((corpus_stage.parent / "stderr.txt").read_text().split())
    assert "warning: corpus: source 'web' kept no documents (input 20: rejected 20, errors 0; top rejection " in err
    assert "ja_sj" not in err
    stats = json.loads((corpus_stage / "ja_sj" / "clean" / "stats.json").read_text())
    assert stats["input"] == 30 and stats["errors"] == 0 and stats["kept"] > 0
    web = json.loads((corpus_stage / "web" / "clean" / "stats.json").read_text())
    assert web["input"] == 20 == web["rejected"] and web["kept"] == 0


def test_empty_source_warning_text(tmp_path: Path, capfd):
    from kamado.corpus.stage import warn_empty

    stats = {"input": 20, "kept": 0, "rejected": 20, "errors": 0,
             "steps": [{"name": "read", "reasons": {}}, {"name": "script", "reasons": {"low_japanese": 15}},
                       {"name": "length", "reasons": {"too_short": 5}}]}
    warn_empty("web", stats, 0, tmp_path)
    err = " ".join(capfd.readouterr().err.split())
    assert ("warning: corpus: source 'web' kept no documents (input 20: rejected 20, errors 0; top rejection "
            "reasons: script/low_japanese 15, length/too_short 5)") in err


def test_later_stages_refuse_a_weight_on_an_empty_source(corpus_stage: Path):
    from kamado.corpus.docs import corpus_sources
    from kamado.data.mixture import resolve_weights
    from kamado.tokenizer.config import TokenizerConfig
    from kamado.tokenizer.train import collect_sample

    specs = corpus_sources(corpus_stage)
    cfg = TokenizerConfig(vocab_size=300, sample_chars=10_000, weights={"ja_sj": 0.5, "web": 0.5})
    with pytest.raises(KamadoError, match=r"tokenizer.weights: web=0.5 names source 'web', which holds no "
                                          r"documents \(the corpus filters rejected all of them"):
        collect_sample(specs, cfg)
    assert collect_sample(specs, cfg.model_copy(update={"weights": {"ja_sj": 1.0, "web": 0.0}})).lines
    with pytest.raises(KamadoError, match=r"mixture.weights: en=1, but every 'en' source holds no documents \(gone"):
        resolve_weights({"ja": 1.0, "en": 1.0}, {"ja_sj": 100}, {"ja_sj": "ja"}, empty={"gone": "en"})
    with pytest.raises(KamadoError, match=r"mixture.weights: web=0.3 names source 'web'"):
        resolve_weights({"ja_sj": 0.7, "web": 0.3}, {"ja_sj": 100}, {"ja_sj": "ja"}, empty={"web": "ja"})


@pytest.fixture(scope="module")
def small_tok(tmp_path_factory, data_root: Path) -> Path:
    from kamado.corpus.docs import resolve_inputs
    from kamado.tokenizer.config import TokenizerConfig
    from kamado.tokenizer.train import train_tokenizer

    out = tmp_path_factory.mktemp("stok")
    cfg = TokenizerConfig(vocab_size=600, sample_chars=100_000, character_coverage=0.99)
    train_tokenizer(resolve_inputs(["alice"], data_root), cfg, out, seed=1)
    return out


def test_pack_records_its_tokenizer_and_pretrain_refuses_another(small_tok: Path, toy: Path, corpus_stage: Path,
                                                                 tmp_path: Path, capfd):
    from kamado.corpus.docs import corpus_sources
    from kamado.data.artifacts import PackArtifact
    from kamado.data.config import PackConfig
    from kamado.data.pack import pack
    from kamado.manifest import write_manifest

    out = tmp_path / "pack"
    counts = pack(corpus_sources(corpus_stage), small_tok, out, PackConfig(workers=1, valid_fraction=0.1))
    write_manifest(out, stage="data", config={}, counts=counts)
    assert "data: source(s) without documents are not packed: web" in " ".join(capfd.readouterr().err.split())
    art = PackArtifact.open(out)
    assert art.meta["empty_sources"] == {"web": "ja"}
    assert art.tokenizer["vocab_size"] == 600 and set(art.tokenizer["digests"]) >= {"tokenizer.model"}
    art.check_tokenizer(small_tok)  # the same tokenizer: fine
    with pytest.raises(KamadoError, match="was packed with another tokenizer"):
        art.check_tokenizer(toy)
    from kamado.data.config import MixtureConfig
    from kamado.data.loader import MixtureSampler

    with pytest.raises(KamadoError, match=r"mixture.weights: web=0.5 names source 'web', which holds no documents"):
        MixtureSampler(out, MixtureConfig(weights={"ja_sj": 0.5, "web": 0.5}), seq_len=8, micro_batch=1,
                       total_steps=2, seed=0)
    r = kamado("pretrain", "--pack", out, "--tokenizer", toy, "--out", tmp_path / "pt", "--preset", "tiny",
               "--steps", "2")
    assert r.returncode == 2, flat(r)
    assert (f"{out} was packed with another tokenizer than {toy} (its tokenizer.model has SHA-256") in flat(r)
    assert not (tmp_path / "pt" / "checkpoints").exists()
