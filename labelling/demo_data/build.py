"""Rebuild the demo files from the licensed samples in ../shared/data (maintainers only).

Run from the repository root: `python labelling/demo_data/build.py ../shared/data`.
The selection is deterministic, so the committed files can be checked against it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


def read(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def spread(records: list[dict], key, per_group: int) -> list[dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if len(groups[key(record)]) < per_group:
            groups[key(record)].append(record)
    return [record for group in sorted(groups) for record in groups[group]]


def review_item(record: dict, language: str) -> dict:
    return {
        "external_id": record["id"],
        "messages": record["messages"],
        "source": record["source"],
        "license": record["license"],
        "consent": "opt_in",
        "language": language,
        "metadata": {**record.get("meta", {}), "reference_labels": record["labels"]},
    }


def main(shared: Path) -> None:
    review: list[dict] = []
    for record in spread(read(shared / "truthfulqa_llm_answers.jsonl"),
                         lambda r: r["labels"]["lang"], 24):  # fmt: skip
        review.append(review_item(record, record["labels"]["lang"]))
    for record in spread(read(shared / "bbq_bias_sample.jsonl"),
                         lambda r: r["labels"]["category"], 12):  # fmt: skip
        review.append(review_item(record, "en"))
    for record in read(shared / "toldbr_pt_sample.jsonl")[:60]:
        review.append(review_item(record, "pt-br"))

    by_pair: dict[int, dict[str, dict]] = defaultdict(dict)
    for record in read(shared / "hh_harmless_pairs_sample.jsonl"):
        side = "chosen" if record["labels"]["preferred"] else "rejected"
        by_pair[record["meta"]["pair_index"]][side] = record
    pairs = []
    for index in sorted(by_pair):
        if len(pairs) == 40:
            break
        chosen, rejected = by_pair[index]["chosen"], by_pair[index]["rejected"]
        if not all(r["messages"][-1]["content"].strip() for r in (chosen, rejected)):
            continue  # an empty reply makes no comparison
        assert chosen["messages"][:-1] == rejected["messages"][:-1], index
        # Put the preferred reply first or second by a hash, so position tells nothing.
        flip = hashlib.sha256(str(index).encode()).digest()[0] % 2 == 1
        replies = [chosen["messages"][-1]["content"], rejected["messages"][-1]["content"]]
        if flip:
            replies.reverse()
        pairs.append(
            {
                "external_id": f"hh-harmless-pair-{index}",
                "messages": chosen["messages"][:-1],
                "candidates": replies,
                "source": chosen["source"],
                "license": chosen["license"],
                "consent": "opt_in",
                "language": "en",
                "metadata": {**chosen["meta"], "reference_preferred": "b" if flip else "a"},
            }
        )
    for name, rows in (("review.jsonl", review), ("pairs.jsonl", pairs)):
        with (HERE / name).open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} items")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
