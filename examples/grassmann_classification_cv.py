"""Cross-validation on the TRAINING split of JapaneseVowels for the settings of
``grassmann_classification.py`` (used to choose its defaults without looking at the test split).

Every option of the example is accepted and means the same; ``--folds`` and ``--repeats`` set a
repeated stratified k-fold split of the 270 training utterances (standardisation statistics are
recomputed on each training fold).  Reports the mean validation accuracy of GrNet and, with
``--baselines``, of the MLP and the two logistic regressions (on the projectors and log-Euclidean), trained exactly as in the example.

Run (one GrNet training per fold; ``--train-limit N`` for a quick look)::

    python examples/grassmann_classification_cv.py --folds 5 --repeats 1 --json cv.json [options]

for instance ``--swa 0 --augment 0`` to score the training without weight averaging and
augmentation. What to expect: one line per fold on stderr, then the mean and standard deviation of
the validation accuracy of each model; the folds of the 270 utterances are small, so differences
below about half a percent are within the spread between folds unless they are consistent across
paired folds (same ``--seed``: the same folds). The JSON has ``"results"``
(``{model: {"cv_accuracy", "cv_std"}}``) and the per-fold scores under ``"cv"``. The rounds of
cross-validation that chose the example's defaults are in ``docs/results.md``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from example_common import write_json  # noqa: E402

from examples.grassmann_classification import (  # noqa: E402
    accuracy,
    build_parser,
    fit_grnet,
    fit_mlp,
    load_data,
    log_euclidean_features,
    logistic_regression_accuracy,
    padded,
    parameter_count,
    projector_features,
    standardise,
    subspaces,
)


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--baselines", action="store_true", help="also cross-validate baselines")
    args = parser.parse_args(argv)
    from sklearn.model_selection import RepeatedStratifiedKFold

    start_time = time.perf_counter()
    series, y, _, _ = load_data()  # the test split is not used
    if args.train_limit is not None:  # evenly spaced subset (smoke runs)
        step = max(1, len(series) // args.train_limit)
        series, y = series[::step], y[::step]
    splitter = RepeatedStratifiedKFold(
        n_splits=args.folds, n_repeats=args.repeats, random_state=args.seed
    )
    scores: dict[str, list[float]] = {"grnet": []}
    for fold, (fit_index, val_index) in enumerate(splitter.split(np.zeros(len(y)), y)):
        torch.manual_seed(args.seed + fold)
        generator = torch.Generator().manual_seed(args.seed + fold)
        x_fit, x_val = standardise([series[i] for i in fit_index], [series[i] for i in val_index])
        y_fit, y_val = torch.from_numpy(y[fit_index]), torch.from_numpy(y[val_index])
        bases = subspaces(x_fit, args).float()
        bases_val = subspaces(x_val, args).float()
        grnet, _ = fit_grnet(
            args, bases, y_fit, generator, bases_val, y_val, desc=f"fold {fold}", series=x_fit
        )
        scores["grnet"].append(accuracy(grnet, bases_val, y_val))
        if args.baselines:
            scores.setdefault("projector_logreg", []).append(
                logistic_regression_accuracy(
                    projector_features(bases), y[fit_index],
                    projector_features(bases_val), y[val_index], args.seed,
                )
            )  # fmt: skip
            scores.setdefault("log_euclidean", []).append(
                logistic_regression_accuracy(
                    log_euclidean_features(x_fit), y[fit_index],
                    log_euclidean_features(x_val), y[val_index], args.seed,
                )
            )  # fmt: skip
            flat = torch.from_numpy(padded(x_fit)).float()
            flat_val = torch.from_numpy(padded(x_val)).float()
            mlp, _ = fit_mlp(args, parameter_count(grnet), flat, y_fit, generator, flat_val, y_val)
            scores.setdefault("mlp", []).append(accuracy(mlp, flat_val, y_val))
        line = ", ".join(f"{name} {values[-1]:.4f}" for name, values in scores.items())
        print(f"fold {fold}: {line}", file=sys.stderr, flush=True)
    summary = {
        name: {"mean": float(np.mean(values)), "std": float(np.std(values)), "folds": values}
        for name, values in scores.items()
    }
    seconds = time.perf_counter() - start_time
    for name, values in summary.items():
        print(f"{name:<16} CV accuracy {values['mean']:.4f} +- {values['std']:.4f}")
    print(f"total time {seconds:.1f} s")
    results = {
        name: {"cv_accuracy": values["mean"], "cv_std": values["std"]}
        for name, values in summary.items()
    }
    output = {"results": results, "cv": summary, "seconds": seconds,
              "argv": sys.argv[1:] if argv is None else argv}  # fmt: skip
    write_json(args.json, output)
    return output


if __name__ == "__main__":
    main()
