"""WordNet's noun hierarchy embedded in hyperbolic space: Poincaré ball, hyperboloid and Euclidean
embeddings (:class:`manifoldnn.embedding.HierarchyEmbedding`), against gensim's ``PoincareModel``.

The data is the transitive closure of WordNet 3.0's hypernymy below ``--root`` (``mammal.n.01``:
1,182 nouns, 6,542 pairs; ``all``: 82,115 nouns, 743,241 pairs), read from the files of Debian's
``wordnet-base`` (:func:`manifoldnn.datasets.load_wordnet_nouns`), or a balanced tree
(``--tree 4,3``: depth 4, branching 3). Each embedding is trained with Nickel & Kiela's loss
(2017, "Poincaré embeddings for learning hierarchical representations") at every dimension of
``--dims``, with the same negatives and epochs; gensim's ``PoincareModel`` (one worker) joins the
table when gensim is installed. All are evaluated by the same function,
:func:`manifoldnn.embedding.reconstruction_scores` (mean rank and MAP, the published protocol;
gensim's own ``ReconstructionEvaluation`` counts each node among its own negatives, so its ranks
are one higher).

Run (mammals, three dimensions, three models; a few minutes on one core)::

    python examples/hyperbolic_wordnet.py --root mammal.n.01 --dims 2,5,10 --epochs 50 \\
        --json out/hyperbolic_wordnet.json

What to expect: a table of mean rank, MAP and training seconds per model and dimension, the
hyperbolic models well above the Euclidean one at every dimension; the picture of the 2-d Poincaré
embedding (``--out``/``hyperbolic_wordnet.png``, the root near the centre, leaves near the
boundary); and the downstream check: the top-level category of held-out nodes predicted by
:class:`manifoldnn.layers.HyperbolicMLR` on the Poincaré embedding and by scikit-learn's logistic
regression on the Euclidean one (accuracies in the JSON under ``"classification"``).
"""

from __future__ import annotations

import importlib.util
import time

import geoopt
import numpy as np
import torch
from example_common import (
    example_parser,
    keyword_options,
    save_figure,
    write_json,
)

from manifoldnn.datasets import balanced_tree, load_wordnet_nouns, transitive_closure
from manifoldnn.embedding import HierarchyEmbedding, reconstruction_scores
from manifoldnn.layers import HyperbolicMLR


def load(args) -> tuple[list[tuple[str, str]], list[tuple[str, str]], str]:
    """Closure pairs, direct edges and the root's name."""
    if args.tree:
        depth, branching = (int(v) for v in args.tree.split(","))
        edges = balanced_tree(depth, branching)
        return transitive_closure(edges), edges, "0"
    root = None if args.root == "all" else args.root
    hierarchy = load_wordnet_nouns(root, path=args.wordnet)
    return hierarchy.pairs, hierarchy.edges, root or "entity.n.01"


def train_gensim(pairs, dim, args):
    """gensim's PoincareModel with the same dimension, negatives, epochs and burn-in, one worker."""
    from gensim.models.poincare import PoincareModel

    model = PoincareModel(
        pairs, size=dim, negative=args.negatives, workers=1, seed=args.seed, burn_in=args.burn_in
    )
    start = time.perf_counter()
    model.train(epochs=args.epochs, batch_size=10)
    seconds = time.perf_counter() - start
    nodes = list(model.kv.index_to_key)
    return torch.from_numpy(np.asarray(model.kv.vectors)), nodes, seconds


def categories(edges, root, nodes) -> dict[str, str]:
    """The child of ``root`` above each node (the first in name order when several)."""
    parents: dict[str, list[str]] = {}
    for child, parent in edges:
        parents.setdefault(child, []).append(parent)
    top: dict[str, str | None] = {root: None}

    def find(node: str) -> str | None:
        if node not in top:
            found = [node if parent == root else find(parent) for parent in parents.get(node, ())]
            found = sorted(c for c in found if c is not None)
            top[node] = found[0] if found else None
        return top[node]

    return {node: find(node) for node in nodes if node != root and find(node) is not None}


def classify(models, edges, root, seed) -> dict[str, float]:
    """Held-out top-level categories from the Poincaré embedding (hyperbolic MLR) and from the
    Euclidean one (logistic regression), on the categories with at least 10 nodes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    poincare, euclidean = models["poincare"], models["euclidean"]
    labels = categories(edges, root, poincare.nodes_)
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    kept = sorted(n for n, label in labels.items() if counts[label] >= 10)
    names = sorted({labels[n] for n in kept})
    if len(names) < 2:
        return {}
    y = np.asarray([names.index(labels[n]) for n in kept])
    train, test = train_test_split(
        np.arange(len(kept)), test_size=0.25, random_state=seed, stratify=y
    )
    result = {"categories": len(names), "held_out_nodes": len(test)}

    rows = {n: i for i, n in enumerate(poincare.nodes_)}
    x = poincare.embedding_.detach().double()[[rows[kept[i]] for i in range(len(kept))]]
    torch.manual_seed(seed)
    mlr = HyperbolicMLR(x.shape[1], len(names), dtype=torch.float64)
    optimizer = geoopt.optim.RiemannianAdam(mlr.parameters(), lr=0.05)
    target = torch.as_tensor(y)
    for _ in range(300):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(mlr(x[train]), target[train])
        loss.backward()
        optimizer.step()
    predicted = mlr(x[test]).argmax(-1).numpy()
    result["hyperbolic_mlr_on_poincare"] = float((predicted == y[test]).mean())

    rows = {n: i for i, n in enumerate(euclidean.nodes_)}
    z = euclidean.embedding_.detach().double().numpy()[[rows[n] for n in kept]]
    logistic = LogisticRegression(max_iter=1000).fit(z[train], y[train])
    result["logistic_regression_on_euclidean"] = float(logistic.score(z[test], y[test]))
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = example_parser(__doc__, "hyperbolic_wordnet")
    parser.add_argument("--root", default="mammal.n.01", help='a noun synset, or "all"')
    parser.add_argument("--tree", default=None, help="DEPTH,BRANCHING: a balanced tree instead")
    parser.add_argument("--wordnet", default=None, help="directory of data.noun and index.noun")
    parser.add_argument("--dims", default="2,5,10")
    parser.add_argument("--manifold", default="poincare,lorentz,euclidean")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--burn-in", type=int, default=10)
    parser.add_argument("--negatives", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--no-gensim", action="store_true", help="leave gensim out")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pairs, edges, root = load(args)
    nodes = {n for p in pairs for n in p}
    dims = [int(d) for d in args.dims.split(",")]
    manifolds = args.manifold.split(",")
    use_gensim = not args.no_gensim and importlib.util.find_spec("gensim") is not None
    print(f"{len(nodes)} nodes, {len(pairs)} closure pairs below {root}")
    print(f"{'model':<22} {'dim':>4} {'mean rank':>10} {'MAP':>7} {'seconds':>8}")
    results, trained = {}, {}
    for dim in dims:
        for manifold in manifolds:
            options = keyword_options(args, HierarchyEmbedding)  # epochs, lr, negatives, ...
            model = HierarchyEmbedding(dim, manifold, random_state=args.seed, **options).fit(pairs)
            scores = reconstruction_scores(
                model.embedding_, pairs, manifold=manifold, nodes=model.nodes_
            )
            scores["seconds"] = model.fit_time_
            results[f"manifoldnn_{manifold}_{dim}d"] = scores
            trained[(manifold, dim)] = model
        if use_gensim:
            points, names, seconds = train_gensim(pairs, dim, args)
            scores = reconstruction_scores(points, pairs, manifold="poincare", nodes=names)
            scores["seconds"] = seconds
            results[f"gensim_poincare_{dim}d"] = scores
    for name, scores in results.items():
        model, dim = name.rsplit("_", 1)
        print(
            f"{model:<22} {dim:>4} {scores['mean_rank']:>10.2f} {scores['map']:>7.3f} "
            f"{scores['seconds']:>8.1f}"
        )
    report = {"results": results, "seed": args.seed, "epochs": args.epochs, "root": root}
    top = max(d for d in dims)
    if ("poincare", top) in trained and ("euclidean", top) in trained:
        models = {m: trained[(m, top)] for m in ("poincare", "euclidean")}
        report["classification"] = classify(models, edges, root, args.seed)
        print(f"top-level categories at {top} dimensions: {report['classification']}")
    if ("poincare", 2) in trained:
        plot(trained[("poincare", 2)], root, args.out)
    report["seconds"] = time.perf_counter() - start
    write_json(args.json, report)
    return report


def plot(model, root, out) -> None:
    """The 2-d Poincaré embedding in the unit disc, the root and its children named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = model.embedding_.detach().double().numpy()
    figure, axis = plt.subplots(figsize=(6, 6))
    axis.add_patch(plt.Circle((0, 0), 1, fill=False, color="grey"))
    axis.scatter(points[:, 0], points[:, 1], s=3, alpha=0.5)
    for i in np.argsort(np.linalg.norm(points, axis=1))[:8]:  # the nodes nearest the centre
        axis.annotate(model.nodes_[i], tuple(points[i]), fontsize=7)
    axis.set_xlim(-1.05, 1.05)
    axis.set_ylim(-1.05, 1.05)
    axis.set_aspect("equal")
    save_figure(figure, out / "hyperbolic_wordnet.png", f"{root}: 2-d Poincaré embedding")


if __name__ == "__main__":
    main()
