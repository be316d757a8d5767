"""Rebuild src/kamado/resources/datasets.json from the shared data README (maintainer tool).

Usage: python scripts/build_catalog.py ../shared/data
Each entry records the file's path under the data root, its license, its upstream repository, path and
commit, its SHA-256 and, for byte-identical copies, a public download URL.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

NAMES = {
    "jglue/jcommonsenseqa/train.jsonl": "jcommonsenseqa-train",
    "jglue/jcommonsenseqa/valid_first_half.jsonl": "jcommonsenseqa",
    "jglue/jnli/valid_first_half.jsonl": "jnli",
    "jglue/jsts/train.jsonl": "jsts-train",
    "jglue/jsts/valid_first_half.jsonl": "jsts",
    "jglue/jsquad/valid_first_half.json": "jsquad-valid",
    "ja_mt_bench/question.jsonl": "mt-bench-ja",
    "ja_mt_bench/question_full.jsonl": "mt-bench-ja-full",
    "ja_mt_bench/judge_ja_prompts.jsonl": "mt-bench-ja-judge-prompts",
    "ja_mt_bench/reference_answer/gpt-4.jsonl": "mt-bench-ja-reference",
    "ja_mt_bench/reference_answer/base-gpt4o-with-human-annotation.jsonl": "mt-bench-ja-reference-gpt4o",
    "ja_mt_bench/model_answer/gpt-4.jsonl": "mt-bench-ja-answers-gpt4",
    "ja_mt_bench/model_answer/japanese-stablelm-instruct-alpha-7b.jsonl": "mt-bench-ja-answers-stablelm",
    "ja_mt_bench/model_judgment/gpt-4_single.jsonl.gz": "mt-bench-ja-judgments-gpt4",
    "ja_text/aozora_raw_samples/127_ruby_150.txt": "aozora-raw-rashomon",
    "ja_text/aozora_raw_samples/1567_ruby_4948.txt": "aozora-raw-melos",
    "en_mt_bench/question.jsonl": "mt-bench-en",
    "en_mt_bench/judge_prompts.jsonl": "mt-bench-en-judge-prompts",
    "en_mt_bench/reference_answer/gpt-4.jsonl": "mt-bench-en-reference",
    "en_eval/hellaswag/val_first_half.jsonl": "hellaswag",
    "en_eval/arc_easy/train.jsonl": "arc-easy-train",
    "en_eval/arc_easy/validation_first_half.jsonl": "arc-easy",
    "en_eval/arc_challenge/train.jsonl": "arc-challenge-train",
    "en_eval/arc_challenge/validation_first_half.jsonl": "arc-challenge",
    "en_eval/truthfulqa/mc_task_first_half.json": "truthfulqa-mc",
    "en_eval/truthfulqa/TruthfulQA_first_half.csv": "truthfulqa",
    "ja_instruct/databricks-dolly-15k-ja_first3000.jsonl": "dolly-ja",
    "ja_text/jaquad_train_wikipedia_paragraphs.jsonl.gz": "ja-wikipedia",
    "ja_text/aozora_pd_works_clean.jsonl.gz": "aozora",
    "ja_web_noisy/mc4ja_paragraphs_labeled.jsonl": "mc4-ja-labeled",
    "ja_web_noisy/fineweb2_edu_ja_docs.jsonl": "fineweb2-ja",
    "ja_web_noisy/uzushio_crawled_page_kakaku.txt": "kakaku-page",
    "en_text/wikitext-2/valid_first_half.txt": "wikitext2",
    "en_text/tinyshakespeare.txt": "tinyshakespeare",
    "en_text/alice_in_wonderland.txt": "alice",
    "en_text/gutenberg/1342_pride_and_prejudice.txt": "gutenberg-pride",
    "en_text/gutenberg/84_frankenstein.txt": "gutenberg-frankenstein",
    "en_text/gutenberg/1661_adventures_of_sherlock_holmes.txt": "gutenberg-holmes",
    "en_text/gutenberg/2701_moby_dick.txt": "gutenberg-moby-dick",
    "ja_qa/aio/aio_02_dev_first_half.tsv": "aio",
    "ja_qa/aio/aio_01_dev1.tsv": "aio-pool",
    "ja_qa/aio/normalize_answer.py": "aio-normalize",
    "ja_math/mgsm/mgsm_ja_first_half.tsv": "mgsm-ja",
    "ja_math/mgsm/exemplars_ja.json": "mgsm-ja-exemplars",
    "ja_winograd/xwinograd_jp_first_half.tsv": "xwinograd-ja",
}


def main(root: Path) -> None:
    text = (root / "README.md").read_text(encoding="utf-8")
    sections = re.split(r"^### `", text, flags=re.M)[1:]
    entries = []
    for sec in sections:
        path = sec.split("`", 1)[0]
        field = lambda k: (re.search(rf"^- {k}: (.*)$", sec, re.M) or [None, None])[1]  # noqa: E731
        src = field("Source") or ""
        m = re.match(r"github\.com/(\S+) — `([^`]+)` @ `([0-9a-f]{40})`", src)
        notes = (field("Notes") or "") + " " + (field("Format") or "")
        identical = "byte-identical" in notes or "otherwise unmodified" in notes
        p = root / path
        name = NAMES.get(path) or re.sub(r"[^a-z0-9]+", "-", Path(path).stem.lower()).strip("-")
        e = {
            "name": name,
            "path": path,
            "what": field("What"),
            "license": field("License"),
            "records": int((field("Records") or "0").split()[0]),
            "upstream": {"repo": m[1], "path": m[2], "commit": m[3]} if m else None,
            "url": f"https://raw.githubusercontent.com/{m[1]}/{m[3]}/{m[2]}" if (m and identical) else None,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None,
            "size": p.stat().st_size if p.is_file() else None,
        }
        entries.append(e)
    out = Path(__file__).resolve().parents[1] / "src/kamado/resources/datasets.json"
    out.write_text(json.dumps(entries, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(entries)} entries -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
