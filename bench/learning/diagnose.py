"""Why label efficiency is hard to measure on the sample sets: chance level, the classifier's C,
test-set noise, and how flat random's learning curve is around the 95% target.

    .venv/bin/python bench/learning/diagnose.py [--sets bbq] [--seeds 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import efficiency  # noqa: E402

from labelling.learning import classifiers  # noqa: E402
from labelling.learning.simulate import group_split  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="*", default=list(efficiency.SETS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--test-share", type=float, default=0.2)
    parser.add_argument("--max-items", type=int, default=efficiency.MAX_ITEMS)
    parser.add_argument("--Cs", nargs="*", type=float, default=[0.01, 0.1, 1.0, 10.0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[10, 20, 40, 80, 160, 320, 640])
    args = parser.parse_args()
    for name in args.sets:
        rows, y, groups = efficiency.load(name, args.max_items)
        X = efficiency.model_inputs(efficiency.embed(name, rows, args.max_items))
        classes = np.unique(y).tolist()
        counts = {c: int((y == c).sum()) for c in classes}
        print(f"\n{name}: {len(y)} items {counts}, {X.shape[1]}-d")
        chance, full = [], {C: [] for C in args.Cs}
        curve = {n: [] for n in args.sizes}
        for seed in range(args.seeds):
            pool, test = group_split(groups, args.test_share, seed)
            rng = np.random.default_rng(seed)
            # Chance: predictions drawn from the class frequencies.
            chance.append(classifiers.macro_f1(y[test], rng.choice(y[pool], size=test.size)))
            for C in args.Cs:
                model = classifiers.train(X[pool], y[pool], classes=classes, C=C, calibrate=False)
                full[C].append(classifiers.macro_f1(y[test], classifiers.predict(model, X[test])))
            order = pool[rng.permutation(pool.size)]
            for n in args.sizes:
                head = order[:n]
                if np.unique(y[head]).size < 2:
                    curve[n].append(0.0)
                    continue
                model = classifiers.train(X[head], y[head], classes=classes, calibrate=False)
                curve[n].append(classifiers.macro_f1(y[test], classifiers.predict(model, X[test])))
        print(f"  test items ~{test.size}; chance macro-F1 {np.mean(chance):.3f}")
        for C, values in full.items():
            print(f"  full-data C={C:<6} macro-F1 {np.mean(values):.3f} ± {np.std(values):.3f}")
        for n, values in curve.items():
            print(f"  random {n:>4} labels: {np.mean(values):.3f} ± {np.std(values):.3f}")


if __name__ == "__main__":
    main()
