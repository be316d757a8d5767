"""Corpus cleaning throughput per process: kamado's Japanese chains vs HojiChar vs datatrove, with agreement.

All Japanese text and web text of the data root (Aozora, Wikipedia paragraphs, mC4, FineWeb-2, the
kakaku page, raw Aozora samples) is loaded, then repeated with light perturbation (a character
swapped per paragraph) until it reaches ``--mb`` MB of UTF-8 text. The corpus is cut into chunks and
the contenders run on each chunk in rotating order (A B C, B C A, …) in this one process; the table
reports the median MB/s per process (MB of text per CPU second of this process, so other jobs on a
shared machine disturb it less than wall time) over chunks and the ratio to HojiChar.

* kamado: ``default-ja`` (both passes: corpus-wide line counting, then the full chain), in memory; and
  ``hojichar-compat``, HojiChar's decisions on equal work (the like-for-like speed comparison).
* HojiChar: its core Japanese document filters exactly as ``../shared/checks/hojichar_ids.py`` (normalizer,
  AcceptJapanese, length, BBS, ads, adult / discrimination / violence NG words, rare 句点, character
  repetition, single-character repetition, ellipsis, PII mask), composed with ``hojichar.Compose``.
* agreement: the share of documents each contender keeps or rejects as HojiChar does (speed figures of
  contenders that decide differently are not comparable work).
* datatrove: GopherRepetition + GopherQuality + C4Quality + FineWebQuality with ``language=ja``.
  Its Japanese word tokenizer is spaCy + SudachiPy; when those are not installed a regex
  script-run splitter stands in (far faster than a morphological analyser, so datatrove's real
  speed is lower). datatrove is slow: it gets ``--datatrove-share`` of each chunk, and says so.

These figures are in-process (texts in memory, nothing written). ``--whole-job IN.jsonl`` adds ``kamado corpus
clean`` as a user runs it — start-up, read, clean, compress, write kept/ and rejected/ — per output format, in
CPU seconds of whole processes (benchmarks/corpus_jobs.py, chain ``--whole-job-recipe``).

Run: ``.venv/bin/python benchmarks/corpus_throughput.py [--mb 30] [--chunks 8] [--whole-job IN.jsonl]``
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def load_corpus(root: Path, target_mb: float, seed: int = 0) -> list[str]:
    from kamado.corpus.io.documents import Document
    from kamado.corpus.io.readers import list_inputs, read_shard

    files = list_inputs([root / "ja_text", root / "ja_web_noisy"])
    files = [f for f in files if "/lists/" not in str(f)]
    base = [d.text for f in files for d in read_shard(f) if isinstance(d, Document) and d.text]
    rng = random.Random(seed)
    random_order = list(base)
    rng.shuffle(random_order)
    docs: list[str] = []
    size = 0
    copy = 0
    while size < target_mb * 1e6:
        for t in random_order:
            if copy:
                paras = t.split("\n")
                for i in range(len(paras)):
                    if len(paras[i]) > 4:
                        j = rng.randrange(len(paras[i]))
                        paras[i] = paras[i][:j] + paras[i][j:j + 1] * 2 + paras[i][j + 1:]
                t = "\n".join(paras)
            docs.append(t)
            size += len(t.encode())
            if size >= target_mb * 1e6:
                break
        copy += 1
    rng.shuffle(docs)
    return docs


class ScriptRunTokenizer:
    """Stand-in Japanese word splitter for datatrove: runs of one script (kanji, hiragana, katakana,
    Latin/digits), punctuation alone. Much faster than SudachiPy."""

    _WORD = re.compile(r"[\u4e00-\u9fff\u3005]+|[\u3041-\u309f]+|[\u30a0-\u30ff]+|[A-Za-z0-9]+|\S")
    _SENT = re.compile(r"[^。！？!?\n]+[。！？!?]*")

    def __init__(self) -> None:
        from datatrove.utils.word_tokenizers import WordTokenizer

        class _Tok(WordTokenizer):
            def word_tokenize(s, text: str) -> list[str]:  # noqa: N805
                return self._WORD.findall(text)

            def sent_tokenize(s, text: str) -> list[str]:  # noqa: N805
                return [x.strip() for x in self._SENT.findall(text) if x.strip()]

            def span_tokenize(s, text: str) -> list[tuple[int, int]]:  # noqa: N805
                return [m.span() for m in self._SENT.finditer(text)]

        self.tok = _Tok("ja")


def make_kamado(root: Path, name: str = "default-ja"):
    from kamado.corpus.config import default_chain
    from kamado.corpus.io.documents import Document
    from kamado.corpus.jobs.line_counts import LineCounter
    from kamado.corpus.steps.base import Env
    from kamado.corpus.steps.chain import Pipeline, repeated_index

    chain = default_chain(name)
    env = Env(root)
    k = repeated_index(chain)
    counter = LineCounter(chain, env) if k is not None else None
    pipe = Pipeline(chain, env)

    def run(texts: list[str]) -> list[bool]:
        if counter is not None and k is not None:
            counter.reset()  # pass 1 (the same step loop): line hashes after the steps before repeated_lines
            for i, t in enumerate(texts):
                counter.add(Document(id=str(i), text=t, source="bench"))
            env.repeated = counter.frequent()
            pipe.steps[k].env.repeated = env.repeated
        return [pipe.process(Document(id=str(i), text=t, source="bench"))[1] is None  # pass 2: the whole chain
                for i, t in enumerate(texts)]

    return run


def make_hojichar():
    from hojichar import Compose, Document
    from hojichar.filters import document_filters as F

    filters = [F.DocumentNormalizer(), F.AcceptJapanese(), F.DocumentLengthFilter(min_doc_len=100, max_doc_len=500_000),
               F.DiscardBBSComments(), F.DiscardAds(), F.DiscardAdultContentJa(), F.DiscardDiscriminationContentJa(),
               F.DiscardViolenceContentJa(), F.DiscardRareKuten(), F.CharRepetitionRatioFilter(),
               F.SingleCharacterRepetitionFilter(), F.DiscardTooManyEndingEllipsis(), F.MaskPersonalInformation()]
    comp = Compose(filters)  # = ../shared/checks/hojichar_ids.py

    def run(texts: list[str]) -> list[bool]:
        return [not comp.apply(Document(t)).is_rejected for t in texts]

    return run


def make_datatrove():
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    try:
        import spacy  # noqa: F401
        import sudachipy  # noqa: F401

        lang, note = "jpn", "spaCy+SudachiPy"
    except ImportError:
        lang, note = ScriptRunTokenizer().tok, "regex script-run splitter (spaCy/SudachiPy not installed)"
    filters = [GopherRepetitionFilter(language=lang), GopherQualityFilter(language=lang),
               C4QualityFilter(language=lang, filter_no_terminal_punct=False), FineWebQualityFilter(language=lang)]

    def run(texts: list[str]) -> list[bool]:
        out = []
        for i, t in enumerate(texts):
            d = Document(text=t, id=str(i))
            ok = True
            for f in filters:
                r = f.filter(d)
                if r is False or (isinstance(r, tuple) and r[0] is False):
                    ok = False
                    break
            out.append(ok)
        return out

    return run, note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=30.0, help="MB of UTF-8 text in the benchmark corpus")
    ap.add_argument("--chunks", type=int, default=6, help="chunks; contenders alternate per chunk")
    ap.add_argument("--datatrove-share", type=float, default=0.02, help="share of each chunk datatrove gets")
    ap.add_argument("--no-datatrove", action="store_true")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--whole-job", type=Path, default=None, help="JSONL input for whole-process clean jobs too")
    ap.add_argument("--whole-job-recipe", default="default-ja", help="chain of the whole-process clean jobs")
    args = ap.parse_args()

    from kamado.catalog import data_root

    root = data_root(args.data_root)
    t0 = time.perf_counter()
    docs = load_corpus(root, args.mb)
    total_mb = sum(len(t.encode()) for t in docs) / 1e6
    print(f"corpus: {len(docs):,} documents, {total_mb:.1f} MB of Japanese text (loaded in {time.perf_counter() - t0:.1f}s)")

    contenders = {"kamado default-ja": make_kamado(root), "kamado hojichar-compat": make_kamado(root, "hojichar-compat"),
                  "HojiChar core ja": make_hojichar()}
    note = ""
    if not args.no_datatrove:
        dt, note = make_datatrove()
        contenders["datatrove Gopher+C4+FineWeb"] = dt
    warm = [d for d in docs[:50] if len(d) < 20_000][:10]
    warm += ["This English paragraph makes kamado load its language detector before timing starts. " * 5,
             "北京是中国的首都，也是政治和文化中心。" * 10]
    for fn in contenders.values():  # one-time setup (dictionaries, models) is not timed
        fn(warm)
    names = list(contenders)
    n = args.chunks
    chunks = [docs[i::n] for i in range(n)]
    speeds: dict[str, list[float]] = {k: [] for k in names}
    kept: dict[str, int] = {k: 0 for k in names}
    same: dict[str, list[int]] = {k: [0, 0] for k in names}  # decisions equal to HojiChar's, documents compared
    decided: dict[str, list[bool]] = {}
    seen: dict[str, float] = {k: 0.0 for k in names}
    for ci, chunk in enumerate(chunks):
        order = names[ci % len(names):] + names[: ci % len(names)]
        for name in order:
            part = chunk
            if name.startswith("datatrove"):  # the first documents of the chunk up to its byte share
                budget, part = args.datatrove_share * sum(len(t.encode()) for t in chunk), []
                for t in chunk:
                    if part and sum(len(x.encode()) for x in part) + len(t.encode()) > budget:
                        continue
                    part.append(t)
            mb = sum(len(t.encode()) for t in part) / 1e6
            t = time.process_time()  # CPU seconds of this process: robust to other jobs on the machine
            flags = contenders[name](part)
            dt_s = time.process_time() - t
            speeds[name].append(mb / dt_s)
            kept[name] += sum(flags)
            if part is chunk:
                decided[name] = flags
            seen[name] += mb
            print(f"  chunk {ci + 1}/{n} {name:30s} {mb:6.2f} MB {dt_s:7.2f}s {mb / dt_s:6.2f} MB/s", flush=True)
        for name, flags in decided.items():
            same[name][0] += sum(a == b for a, b in zip(flags, decided["HojiChar core ja"], strict=True))
            same[name][1] += len(flags)
        decided.clear()
    ref = statistics.median(speeds["HojiChar core ja"])
    print()
    print("| contender | MB processed | median MB/s per process | vs HojiChar | docs kept | same decision as HojiChar |")
    print("|---|---|---|---|---|---|")
    for name in names:
        med = statistics.median(speeds[name])
        label = name + (f" ({args.datatrove_share:.0%} sample; {note})" if name.startswith("datatrove") else "")
        agree = f"{same[name][0] / same[name][1]:.2%}" if same[name][1] else "n/a (sample)"
        print(f"| {label} | {seen[name]:.1f} | {med:.2f} | {med / ref:.2f}x | {kept[name]:,} | {agree} |")
    print(f"\n(medians over {n} chunks run in rotating order in one process, MB of UTF-8 text per CPU second; "
          f"other jobs on the machine still make absolute numbers noisy, the ratios are the result)")

    if args.whole_job:
        from corpus_jobs import whole_jobs  # benchmarks/corpus_jobs.py

        whole_jobs(args.whole_job, ["clean"], 2, recipe=args.whole_job_recipe)


if __name__ == "__main__":
    main()
