r"""Classify multichannel recordings by their covariance matrices: SPDNet, SPDNet with Riemannian
batch normalisation, and pyRiemann's classical anchors on the same data and splits.

Data (read offline from aeon's bundled copies, ``pip install aeon``):

* ``japanese_vowels`` (Kudo, Toyama & Shimbo 1999): 12 LPC coefficients per frame, 7-29 frames
  per utterance, 9 speakers, 270 train / 370 test; each utterance's covariance over its full
  length;
* ``basic_motions``: 6 accelerometer and gyroscope channels, 100 samples, 4 activities, 40 / 40.

Each recording, its channels standardised with the training set's statistics, becomes a shrunk
covariance (:class:`manifoldnn.layers.CovPool`, shrinkage towards the scaled identity: utterances
shorter than 12 frames have singular sample covariances); with ``--with-mean``, covariance and
mean together as one SPD matrix of size C + 1 (the Gaussian embedding of Calvo & Oller 1990: the
channel means carry much of what separates JapaneseVowels' speakers). Then, on the same matrices:

* ``mdm``: pyRiemann's minimum distance to the (affine-invariant) class means;
* ``ts_lr``: pyRiemann's tangent space at the training mean + scikit-learn's logistic regression;
* ``spdnet``: :class:`manifoldnn.models.SPDNet` (BiMap -> ReEig blocks, LogEig, linear), trained
  with :class:`geoopt.optim.RiemannianAdam`;
* ``spdnet_bn``: the same with :class:`manifoldnn.layers.SPDBatchNorm` after every BiMap (Brooks
  et al. 2019);
* ``spdnet_bn_var``: the same batch norm normalising the batch's Fréchet variance too, to a
  learned dispersion (``SPDBatchNorm(variance=True)``, Kobler et al. 2022);
* ``spd_attention``: SPD attention in the spirit of GyroAtt: tokens are the covariances of the
  whole recording and of its ``--windows`` consecutive parts, attended by
  :class:`manifoldnn.layers.GeodesicAttention` on the log-Euclidean metric (scores
  :math:`-d^2/\tau`, values aggregated by their weighted Fréchet mean, exact on this flat metric),
  then LogEig, a mean over tokens and a linear layer;
* ``spd_learn``: the peer library's SPDNet (spd_learn 0.2.1, ``pip install "manifoldnn[benchmarks]"``)
  with the same layer sizes, trained by the same loop: its ``BiMap`` (W kept orthonormal by
  PyTorch's Cayley parametrisation, a plain parameter for the optimiser), ``ReEig`` with the same
  floor, ``LogEig`` (norm-preserving upper triangle) and a linear layer. spd_learn's
  ``models.SPDNet`` is the one-block case of this stack, so the blocks are composed from its
  modules to match SPDNet's ``layer_sizes``. It runs by default when spd_learn is installed.

Run::

    python examples/spd_classification.py --data japanese_vowels --json out/spd.json
    python examples/spd_classification.py --data japanese_vowels --with-mean --json out/spd_m.json

Prints one accuracy per method, writes ``accuracy.png`` (and the JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import geoopt
import numpy as np
import torch
from example_common import add_options, add_output_arguments, save_figure, write_json
from tqdm import tqdm

from manifoldnn.layers import CovPool, GeodesicAttention, LogEig
from manifoldnn.linalg import symmetric_vectorize
from manifoldnn.manifolds import spd_manifold
from manifoldnn.models import SPDNet
from manifoldnn.utils.optional import require

DATASETS = ("japanese_vowels", "basic_motions")
METHODS = ("mdm", "ts_lr", "spdnet", "spdnet_bn", "spdnet_bn_var", "spd_attention", "spd_learn")
# the peer runs by default where it is installed; asked for explicitly it says which extra it needs
DEFAULT_METHODS = tuple(
    m for m in METHODS if m != "spd_learn" or importlib.util.find_spec("spd_learn") is not None
)


def load_data(name: str) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    """Recordings as lists of ``(C, T)`` arrays and integer labels, train then test."""
    if name == "japanese_vowels":
        from aeon.datasets import load_japanese_vowels as load
    else:
        from aeon.datasets import load_basic_motions as load
    x_train, y_train = load(split="TRAIN")
    x_test, y_test = load(split="TEST")
    classes = {label: index for index, label in enumerate(sorted(set(y_train)))}
    encode = np.vectorize(classes.__getitem__)
    return list(x_train), encode(y_train), list(x_test), encode(y_test)


def covariances(
    train: list[np.ndarray],
    test: list[np.ndarray],
    shrinkage: float,
    windows: int = 0,
    with_mean: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Shrunk covariances in float64, channels standardised with the training frames' mean and
    standard deviation: ``(N, C, C)``, or with ``windows > 0`` tokens ``(N, 1 + windows, C, C)``
    (the whole recording, then its ``windows`` consecutive parts of at least 2 frames). With
    ``with_mean`` each covariance :math:`\Sigma` and mean :math:`\mu` become the SPD matrix
    ``[[Sigma + mu mu^T, mu], [mu^T, 1]]`` of size ``C + 1`` (the embedding of a Gaussian, Calvo &
    Oller 1990; positive definite since its Schur complement is :math:`\Sigma`)."""
    frames = np.concatenate(train, axis=1)
    mean, std = frames.mean(1, keepdims=True), frames.std(1, keepdims=True)
    pool = CovPool(shrinkage)

    def describe(x):
        cov = pool(x)
        if not with_mean:
            return cov
        mu = x.mean(1, keepdim=True)
        top = torch.cat([cov + mu @ mu.T, mu], 1)
        return torch.cat([top, torch.cat([mu.T, torch.ones(1, 1, dtype=x.dtype)], 1)], 0)

    def tokens(x):
        x = torch.from_numpy((x - mean) / std).to(torch.float64)
        if windows == 0:
            return describe(x)
        edges = np.linspace(0, x.shape[1], windows + 1).round().astype(int)
        parts = [
            x[:, max(min(a, x.shape[1] - 2), 0) : max(b, a + 2)] for a, b in zip(edges, edges[1:])
        ]
        return torch.stack([describe(x)] + [describe(part) for part in parts])

    return torch.stack([tokens(x) for x in train]), torch.stack([tokens(x) for x in test])


class SPDAttentionClassifier(torch.nn.Module):
    """Geodesic attention over SPD tokens (log-Euclidean metric), LogEig, mean over tokens,
    linear layer: ``(B, L, n, n) -> (B, num_classes)``."""

    def __init__(self, size: int, head_size: int, num_heads: int, num_classes: int) -> None:
        super().__init__()
        self.attention = GeodesicAttention(
            spd_manifold("log_euclidean"), size, head_size, num_heads, dtype=torch.float64
        )
        self.log = LogEig(validate=False)
        features = num_heads * head_size * (head_size + 1) // 2
        self.classifier = torch.nn.Linear(features, num_classes, dtype=torch.float64)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(tokens)
        out = self.log(attended).mean(1)  # (B, H, m, m)
        return self.classifier(symmetric_vectorize(out).flatten(1))


def spd_learn_network(
    layer_sizes: list[int], num_classes: int, eps: float = 1e-4
) -> torch.nn.Module:
    """The peer: spd_learn's BiMap -> ReEig blocks of the same sizes, its LogEig (upper triangle,
    off-diagonal entries scaled by sqrt(2), as :func:`manifoldnn.linalg.symmetric_vectorize`), a
    linear layer; float64 as the other networks."""
    peer = require("spd_learn.modules", "benchmarks", "the spd_learn peer")
    blocks: list[torch.nn.Module] = []
    for in_size, out_size in zip(layer_sizes, layer_sizes[1:]):
        blocks += [
            peer.BiMap(in_size, out_size, dtype=torch.float64),
            peer.ReEig(eps, dtype=torch.float64),
        ]
    last = layer_sizes[-1]
    blocks += [
        peer.LogEig(upper=True, dtype=torch.float64),
        torch.nn.Linear(last * (last + 1) // 2, num_classes, dtype=torch.float64),
    ]
    return torch.nn.Sequential(*blocks)


def fit_network(
    model: torch.nn.Module,
    x_train: torch.Tensor,
    y_train: np.ndarray,
    x_test: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    desc: str,
) -> tuple[np.ndarray, list[float]]:
    """Train ``model`` with RiemannianAdam on cross-entropy (Adam on plain parameters, such as the
    peer's); return test predictions and the mean training loss of each epoch."""
    labels = torch.from_numpy(y_train).long()
    optimizer = geoopt.optim.RiemannianAdam(model.parameters(), lr=lr)
    losses = []
    for _ in tqdm(range(epochs), desc=desc, leave=False):
        model.train()
        order = torch.randperm(len(labels))
        total = 0.0
        # drop a last batch of one matrix: batch normalisation needs two
        for start in range(0, len(order) - 1, batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[index]), labels[index])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        losses.append(total / len(labels))
    model.eval()
    with torch.no_grad():
        return model(x_test).argmax(-1).numpy(), losses


def fit_pyriemann(method: str, x_train, y_train, x_test) -> np.ndarray:
    """pyRiemann's MDM, or tangent space + logistic regression."""
    from pyriemann.classification import MDM
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if method == "mdm":
        model = MDM(metric="riemann")
    else:
        model = make_pipeline(TangentSpace(metric="riemann"), LogisticRegression(max_iter=1000))
    return model.fit(x_train.numpy(), y_train).predict(x_test.numpy())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=DATASETS, default="japanese_vowels")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    add_options(
        parser,
        {
            "epochs": (60, "SPDNet training epochs"),
            "lr": (1e-2, "RiemannianAdam learning rate"),
            "batch_size": 32,
            "shrinkage": (0.1, "covariance shrinkage towards the scaled identity"),
            "windows": (3, "spd_attention: consecutive parts of a recording, one token each"),
        },
    )
    parser.add_argument(
        "--with-mean",
        action="store_true",
        help="embed each recording's mean with its covariance, [[S + m m^T, m], [m^T, 1]]",
    )
    add_output_arguments(parser, "spd_classification")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Run every method on one dataset; return ``{"results": {method: {accuracy, seconds}}}``."""
    args = build_parser().parse_args(argv)
    x_train, y_train, x_test, y_test = load_data(args.data)
    c_train, c_test = covariances(x_train, x_test, args.shrinkage, with_mean=args.with_mean)
    n, num_classes = c_train.shape[-1], int(y_train.max()) + 1
    layer_sizes = [n, max(n - 2, 2), max(n - 4, 2)]
    results: dict[str, dict[str, float]] = {}
    curves = {}
    for method in args.methods:
        start = time.perf_counter()
        if method in ("mdm", "ts_lr"):
            predictions = fit_pyriemann(method, c_train, y_train, c_test)
        else:
            torch.manual_seed(args.seed)
            if method == "spd_attention":
                model = SPDAttentionClassifier(n, layer_sizes[-1], 2, num_classes)
                inputs = covariances(
                    x_train, x_test, args.shrinkage, args.windows, with_mean=args.with_mean
                )
            elif method == "spd_learn":
                model = spd_learn_network(layer_sizes, num_classes)
                inputs = (c_train, c_test)
            else:
                model = SPDNet(
                    layer_sizes,
                    num_classes,
                    batch_norm=method in ("spdnet_bn", "spdnet_bn_var"),
                    batch_norm_variance=method == "spdnet_bn_var",
                    dtype=torch.float64,
                )
                inputs = (c_train, c_test)
            predictions, curves[method] = fit_network(
                model, inputs[0], y_train, inputs[1],
                epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, desc=method,
            )  # fmt: skip
        accuracy = float((predictions == y_test).mean())
        results[method] = {"accuracy": accuracy, "seconds": time.perf_counter() - start}
        print(f"{args.data:<16}{method:<15}accuracy {accuracy:.3f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    figure, (bars, loss) = plt.subplots(1, 2, figsize=(9, 3.5))
    bars.bar(list(results), [r["accuracy"] for r in results.values()])
    bars.set_ylabel("test accuracy")
    bars.set_ylim(0, 1)
    for method, curve in curves.items():
        loss.plot(range(1, len(curve) + 1), curve, label=method)
    loss.set_xlabel("epoch")
    loss.set_ylabel("training loss")
    if curves:
        loss.legend()
    save_figure(figure, args.out / "accuracy.png", f"{args.data}, seed {args.seed}")
    payload = {"results": results, "config": vars(args) | {"layer_sizes": layer_sizes}}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
