"""Embedding benchmark: plain sentence-transformers fp32 against our length-batched encoders.

Run by hand (`.venv/bin/python bench/learning/embed.py [--items 2000] [--threads 2]`); it prints a
table and is never part of the test suite. Texts are built with `item_text` from the real
conversations in labelling/demo_data/*.jsonl and ../shared/data/*.jsonl (when present), cycled to
--items. Every encoder runs on the same texts and threads; runs are interleaved round by round
(--repeat, median reported) so a burst of load on a shared machine hits them all alike.

- plain fp32: `SentenceTransformer(...).encode(texts, batch_size=64)`, its own max_seq_length;
- ours fp32 / bf16 / int8: `SentenceTransformerEncoder(precision=...)`, sorted by token length.

Columns: items/s, speed-up against plain, mean and min cosine to plain fp32. Goal (DESIGN.md):
≥ 2× plain with mean cosine ≥ 0.99. bf16 is only fast on CPUs with AVX512-BF16 or AMX.

Measured 2026-11-23 (2,000 items, 2 threads, load average 1.2–2.5, AMX CPU): plain fp32 97/s;
ours fp32 143/s (1.48×); bf16 443/s (4.57×, cosine mean 1.0000, min 0.9999); int8 175/s
(1.80×, cosine mean 0.9940, min 0.979).

Measured 2026-12-03 (2,000 items, 2 threads, load average 1.2, AMD EPYC with AVX2 only: no
bf16, no VNNI): plain fp32 45/s; ours fp32 58/s (1.28×); int8 with full 8-bit activations,
what "auto" picks here, 104/s (2.31×, cosine mean 0.9934, min 0.978); bf16 emulated 9/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from itertools import cycle, islice
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from labelling.learning.encoders import (  # noqa: E402
    SentenceTransformerEncoder,
    cpu_has_bf16,
    cpu_has_vnni,
    packaged_model_path,
)
from labelling.learning.texts import item_text  # noqa: E402

GOAL_SPEEDUP = 2.0
GOAL_COSINE = 0.99


def load_texts(items: int, mode: str) -> list[str]:
    files = sorted((ROOT / "labelling" / "demo_data").glob("*.jsonl"))
    files += sorted((ROOT.parent / "shared" / "data").glob("*.jsonl"))
    texts: list[str] = []
    for path in files:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                record = json.loads(line)
                texts.append(item_text(record["messages"], record.get("candidates"), mode=mode))
    if not texts:
        raise SystemExit("no sample conversations found")
    # A fixed interleaving of the sources so a short run still sees every kind of text.
    rng = np.random.default_rng(20240611)
    texts = [texts[i] for i in rng.permutation(len(texts))]
    return list(islice(cycle(texts), items))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the median is reported")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--mode", default="prompt_reply", choices=("last_reply", "prompt_reply", "conversation")
    )
    parser.add_argument(
        "--only", nargs="*", default=["fp32", "bf16", "int8"], help="our precisions to run"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    texts = load_texts(args.items, args.mode)
    chars = np.array([len(t) for t in texts])
    print(
        f"{len(texts)} texts ({args.mode}), {chars.mean():.0f} chars mean, {np.median(chars):.0f} "
        f"median; threads {args.threads}; load average {os.getloadavg()[0]:.2f}; "
        f"bf16 native: {cpu_has_bf16()}, vnni: {cpu_has_vnni()}"
    )

    plain = SentenceTransformer(str(packaged_model_path()), device="cpu")
    runners: dict[str, Callable[[list[str]], np.ndarray]] = {
        "plain fp32": lambda batch: plain.encode(
            batch, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
    }
    for precision in args.only:
        encoder = SentenceTransformerEncoder(precision=precision, threads=args.threads)
        runners[f"ours {precision}"] = lambda batch, e=encoder: e.encode(batch, args.batch_size)
    # First calls pay for allocator and kernel set-up; keep that out of the timings.
    for run in runners.values():
        run(texts[:32])

    seconds: dict[str, list[float]] = {name: [] for name in runners}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.repeat):
        for name, run in runners.items():
            start = time.perf_counter()
            vectors[name] = np.asarray(run(texts), dtype=np.float32)
            seconds[name].append(time.perf_counter() - start)

    reference = vectors["plain fp32"]
    base = statistics.median(seconds["plain fp32"])
    print(f"\n{'encoder':<12} {'items/s':>9} {'speed-up':>9} {'cos mean':>9} {'cos min':>9}  goal")
    for name in runners:
        elapsed = statistics.median(seconds[name])
        cosine = np.einsum("ij,ij->i", vectors[name], reference)
        speedup = base / elapsed
        ok = speedup >= GOAL_SPEEDUP and cosine.mean() >= GOAL_COSINE
        print(
            f"{name:<12} {len(texts) / elapsed:>9.1f} {speedup:>8.2f}× {cosine.mean():>9.4f} "
            f"{cosine.min():>9.4f}  {'met' if ok else '-' if name == 'plain fp32' else 'missed'}"
        )
    print(f"\ngoal: ≥ {GOAL_SPEEDUP:.0f}× plain fp32 with mean cosine ≥ {GOAL_COSINE}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
