r"""Speaker classification on the Grassmannian: GrNet on JapaneseVowels, against three baselines.

What it shows: how to turn variable-length multichannel time series into points of a Grassmann
manifold and classify them with :class:`~manifoldnn.models.GrNet`, trained with
:class:`geoopt.optim.RiemannianAdam` so that every FRMap weight stays on the Stiefel manifold.

Data: JapaneseVowels (Kudo, Toyama & Shimbo 1999), read offline from aeon's bundled copy (``pip
install aeon``): 12 LPC coefficients per frame, 7-29 frames, 9 speakers, 270 train / 370 test.
Each utterance becomes six points of Gr(25, 2), one per time window (the whole utterance and five
windows of 30 % of its length): the dominant 2-dimensional subspace of the delay-embedded, lifted
frames ``[x_t; x_{t+1}; 1]`` (:func:`~manifoldnn.datasets.window_subspaces`; a Hankel subspace,
Turaga et al., TPAMI 2011). GrNet (one FRMap 25 -> 20 per window, ReOrth, ProjMap, a linear head)
trains for 200 epochs on the plain subspaces and on 10 perturbed copies of each training utterance
(frame drop, noise, window jitter), and the model evaluated is the mean of the weights of the last
100 epochs projected back onto the Stiefel manifold (stochastic weight averaging, Izmailov et al.,
UAI 2018). Baselines trained in the same run: logistic regression on the vectorised projectors of
the same subspaces (``projector_logreg``), on log-Euclidean covariance features (``log_euclidean``,
Arsigny et al. 2007), and an MLP of about GrNet's parameter count on the padded series.

Run::

    python examples/grassmann_classification.py --seed 0 --out out/gc --json out/gc/results.json

(about 25 s on one core). Expect test accuracies near 0.98-0.99 for all four methods, GrNet about on
par with the MLP and the log-Euclidean classifier and one or two utterances behind
``projector_logreg``; a table, ``training_curve.png`` and ``grnet.pt`` in ``--out``, and the FRMap
weights orthonormal to float32 rounding after training. The defaults were chosen by
cross-validation on the training split only (``examples/grassmann_classification_cv.py``, any
option of this script); measured figures are in ``docs/results.md``.
"""

from __future__ import annotations

import argparse
import math
import time

import geoopt
import numpy as np
import torch
from example_common import (
    add_options,
    example_parser,
    save_figure,
    write_json,
)
from torch import nn
from tqdm import tqdm

from manifoldnn.datasets import augmented_window_subspaces, window_subspaces
from manifoldnn.models import GrNet
from manifoldnn.optim import ProjectedAveragedModel

MAX_LENGTH = 29
# The whole utterance and five windows of 30 % of its length every 20 %: one subspace each.
WINDOWS = ("0:1", "0:0.3", "0.2:0.5", "0.4:0.7", "0.6:0.9", "0.7:1")


def load_data() -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    """JapaneseVowels from aeon's bundled copy: lists of (12, T) arrays and integer labels 0..8."""
    from aeon.datasets import load_japanese_vowels

    x_train, y_train = load_japanese_vowels(split="TRAIN")
    x_test, y_test = load_japanese_vowels(split="TEST")
    return list(x_train), y_train.astype(int) - 1, list(x_test), y_test.astype(int) - 1


def standardise(train: list[np.ndarray], test: list[np.ndarray]):
    frames = np.concatenate(train, axis=1)
    mean, std = frames.mean(1, keepdims=True), frames.std(1, keepdims=True)
    return [(x - mean) / std for x in train], [(x - mean) / std for x in test]


def subspaces(series: list[np.ndarray], args: argparse.Namespace) -> torch.Tensor:
    """GrNet's input, in float64: the window subspaces of the series (N, K, n, p); (N, n, p) for a
    single window (:func:`~manifoldnn.datasets.window_subspaces`)."""
    bases = window_subspaces(series, args.p, delays=args.delays, windows=args.windows)
    return bases[:, 0] if len(args.windows) == 1 else bases


def log_euclidean_features(series: list[np.ndarray], ridge: float = 1e-3) -> np.ndarray:
    """Upper triangle of log(C + ridge I) (off-diagonal times sqrt 2) and channel means."""
    features = []
    for x in series:
        c = np.cov(x) + ridge * np.eye(x.shape[0])
        values, vectors = np.linalg.eigh(c)
        log_c = (vectors * np.log(values)) @ vectors.T
        rows, cols = np.triu_indices(x.shape[0])
        scale = np.where(rows == cols, 1.0, np.sqrt(2.0))
        features.append(np.concatenate([log_c[rows, cols] * scale, x.mean(1)]))
    return np.asarray(features)


def projector_features(bases: torch.Tensor) -> np.ndarray:
    """Upper triangles of the projectors ``Y Y^T`` of bases (N, [K,] n, p), concatenated: (N, F)."""
    projectors = (bases @ bases.transpose(-1, -2)).double().numpy()
    rows, cols = np.triu_indices(bases.shape[-2])
    return projectors[..., rows, cols].reshape(len(bases), -1)


def padded(series: list[np.ndarray]) -> np.ndarray:
    """Series edge-padded to MAX_LENGTH frames and flattened: (N, 12 * MAX_LENGTH)."""
    return np.asarray(
        [np.pad(x, ((0, 0), (0, MAX_LENGTH - x.shape[1])), mode="edge").ravel() for x in series]
    )


def logistic_regression_accuracy(train, y_train, test, y_test, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    return float(model.fit(train, y_train).score(test, y_test))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        value = (model(x).argmax(-1) == y).float().mean().item()
    model.train()
    return value


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    desc: str,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    label_smoothing: float = 0.0,
    augmented: torch.Tensor | None = None,
    average_last: int = 0,
) -> dict[str, list[float]]:
    """Mini-batch cross-entropy training; returns per-epoch training loss and test accuracy.

    ``augmented`` (A, N, ...): alternatives of the N inputs ``x``; in every epoch each sample is
    drawn uniformly from its A + 1 versions (``x`` itself or one of the A alternatives).
    ``average_last`` = E > 0: after training, every parameter is replaced by its mean over the
    ends of the last E epochs, a :class:`geoopt.ManifoldParameter` then projected back onto its
    manifold (:class:`~manifoldnn.optim.ProjectedAveragedModel`); buffers (batch-norm statistics)
    stay those of the last iterate; the recorded curve is of the iterates."""
    if not 0 <= average_last <= epochs:
        raise ValueError(f"average_last must be in [0, epochs={epochs}], got {average_last}")
    history: dict[str, list[float]] = {"loss": [], "test_accuracy": []}
    averaged = ProjectedAveragedModel(model) if average_last else None
    progress = tqdm(range(epochs), desc=desc, leave=False)
    if augmented is not None and augmented.shape[1:] != x.shape:
        raise ValueError(
            f"augmented must be (A, {', '.join(map(str, x.shape))}), got {tuple(augmented.shape)}"
        )
    for epoch in progress:
        inputs = x
        if augmented is not None:
            choice = torch.randint(len(augmented) + 1, (len(x),), generator=generator)
            inputs = torch.cat([x[None], augmented])[choice, torch.arange(len(x))]
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            batch, targets = inputs[index], y[index]
            output = model(batch)
            # An Ensemble in training mode gives (members, batch, classes): one loss per member.
            members = output if output.dim() == 3 else output[None]
            losses = torch.stack(
                [
                    nn.functional.cross_entropy(o, targets, label_smoothing=label_smoothing)
                    for o in members
                ]
            )
            loss, reported = losses.sum(), losses.mean().item()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += reported * len(index)
        if scheduler is not None:
            scheduler.step()
        history["loss"].append(total / len(x))
        history["test_accuracy"].append(accuracy(model, x_test, y_test))
        progress.set_postfix(loss=f"{history['loss'][-1]:.4f}")
        if averaged is not None and epoch >= epochs - average_last:
            averaged.update_parameters(model)
    if averaged is not None:
        with torch.no_grad():
            for q, mean in zip(model.parameters(), averaged.module.parameters()):
                q.copy_(mean)
    return history


class Ensemble(nn.Module):
    """Independently initialised members trained side by side (each on its own cross-entropy, same
    mini-batches); in eval mode the output is the log of the members' mean softmax probability,
    ``(..., classes)``; in training mode the stacked member logits ``(members, ..., classes)``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([member(x) for member in self.members])
        if self.training:
            return logits
        return torch.logsumexp(logits.log_softmax(-1), dim=0) - math.log(len(self.members))


def build_grnet(args: argparse.Namespace, bases: torch.Tensor, num_classes: int) -> GrNet:
    """GrNet for bases (N, n, p) or (N, K, n, p) (K windows)."""
    in_channels = 1 if bases.dim() == 3 else bases.shape[1]
    grnet = GrNet(
        bases.shape[-2],
        args.p,
        num_classes,
        out_sizes=args.dims,
        channels=args.channels,
        pool_size=args.pool_size,
        pooling=args.pooling,
        embed=False,
        batch_norm=args.batch_norm,
        in_channels=in_channels,
    )
    return grnet


def fit_grnet(
    args: argparse.Namespace,
    bases: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    eval_bases: torch.Tensor,
    eval_labels: torch.Tensor,
    num_classes: int = 9,
    desc: str = "GrNet",
    series: list[np.ndarray] | None = None,
) -> tuple[nn.Module, dict[str, list[float]]]:
    """Train a GrNet (an :class:`Ensemble` of ``args.ensemble`` GrNets if that is > 1) with
    RiemannianAdam (Stiefel weights at ``args.lr``, the linear heads at ``args.head_lr`` with weight
    decay); ``eval_*`` only feed the recorded curve.  With ``args.augment > 0``, ``series`` (the
    standardised training series behind ``bases``) gives ``args.augment`` augmented copies of
    every training sample (:func:`~manifoldnn.datasets.augmented_window_subspaces`, seeded from
    ``generator``)."""
    augmented = None
    if args.augment > 0:
        if series is None:
            raise ValueError("fit_grnet needs the training series for --augment")
        seed = int(torch.randint(2**31, (1,), generator=generator))
        augmented = augmented_window_subspaces(
            series, args.p, args.augment, delays=args.delays, windows=args.windows,
            jitter=args.aug_jitter, drop=args.aug_drop, noise=args.aug_noise,
            generator=torch.Generator().manual_seed(seed),
        ).to(bases.dtype)  # fmt: skip
        if len(args.windows) == 1:  # no window axis, as in subspaces()
            augmented = augmented[:, :, 0]
    members = [build_grnet(args, bases, num_classes) for _ in range(args.ensemble)]
    grnet = members[0] if args.ensemble == 1 else Ensemble(members)
    head = [q for member in members for q in member.head.parameters()]
    head_ids = {id(parameter) for parameter in head}
    manifold_parameters = [q for q in grnet.parameters() if id(q) not in head_ids]
    optimizer = geoopt.optim.RiemannianAdam(
        [
            {"params": manifold_parameters},
            {"params": head, "lr": args.head_lr, "weight_decay": args.weight_decay},
        ],
        lr=args.lr,
    )
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs) if args.cosine else None
    )
    history = train(
        grnet, optimizer, bases, labels, eval_bases, eval_labels, args.epochs, args.batch_size,
        generator, desc, scheduler, label_smoothing=args.label_smoothing, augmented=augmented,
        average_last=min(args.swa, args.epochs),
    )  # fmt: skip
    return grnet, history


def fit_mlp(
    args: argparse.Namespace,
    grnet_parameters: int,
    flat: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    eval_flat: torch.Tensor,
    eval_labels: torch.Tensor,
    num_classes: int = 9,
) -> tuple[nn.Module, dict[str, list[float]]]:
    """The Euclidean baseline: a one-hidden-layer MLP on the padded series ``flat`` (N, F) whose
    hidden width gives about ``grnet_parameters`` parameters (``args.mlp_hidden`` overrides it),
    trained with Adam for ``args.mlp_epochs``; ``eval_*`` only feed the recorded curve."""
    in_features = flat.shape[1]
    hidden = max(1, round((grnet_parameters - num_classes) / (in_features + 1 + num_classes)))
    if args.mlp_hidden is not None:
        hidden = args.mlp_hidden
    mlp = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    history = train(
        mlp, torch.optim.Adam(mlp.parameters(), lr=3e-3, weight_decay=1e-4), flat, labels,
        eval_flat, eval_labels, args.mlp_epochs, args.batch_size, generator, "MLP",
    )  # fmt: skip
    return mlp, history


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def build_parser() -> argparse.ArgumentParser:
    parser = example_parser(__doc__, "grassmann_classification")
    parser.add_argument("--p", type=int, default=2, help="subspace dimension")
    parser.add_argument("--delays", type=int, default=1, help="delay-embedding depth of the frames")
    parser.add_argument("--dims", type=int, nargs="+", default=[20], help="FRMap output sizes")
    parser.add_argument("--channels", type=int, default=6, help="FRMap channels of block 1")
    parser.add_argument("--pool-size", type=int, default=1, help="channels per pooling group")
    parser.add_argument(
        "--pooling",
        choices=["projection", "karcher"],
        default="projection",
        help="pooling of groups of --pool-size channels (none with the default --pool-size 1); "
        "karcher stops with a ValueError if pooled channels reach a principal angle of pi/2",
    )
    add_options(
        parser,
        {
            "epochs": 200,
            "batch_size": 30,
            "lr": 0.01,
            "head_lr": 0.03,
            "weight_decay": (1e-3, "on the linear head"),
        },
    )
    parser.add_argument(
        "--batch-norm", action="store_true", help="batch-normalise the head's projector features"
    )
    parser.add_argument(
        "--cosine", action="store_true", help="cosine learning-rate decay over the GrNet epochs"
    )
    parser.add_argument("--label-smoothing", type=float, default=0.0, help="GrNet's loss")
    parser.add_argument(
        "--windows",
        nargs="+",
        default=list(WINDOWS),
        help="time windows start:stop (fractions of the length), one input subspace each; a single "
        "0:1 is the whole series without a channel axis",
    )
    parser.add_argument(
        "--ensemble", type=int, default=1, help="GrNets averaged (softmax probabilities)"
    )
    parser.add_argument(
        "--swa",
        type=int,
        default=100,
        help="average GrNet's weights over the last N epochs (at most --epochs; Stiefel weights "
        "projected back onto the manifold); 0: the last iterate",
    )
    parser.add_argument(
        "--augment",
        type=int,
        default=10,
        help="augmented copies of every training utterance for GrNet (frame dropping, noise, "
        "window jitter; each epoch uses the original or one copy); 0: none",
    )
    parser.add_argument(
        "--aug-jitter", type=float, default=0.05, help="window-end shift, fraction of the length"
    )
    parser.add_argument("--aug-drop", type=float, default=0.1, help="frame-drop probability")
    parser.add_argument(
        "--aug-noise", type=float, default=0.05, help="noise std on the standardised frames"
    )
    parser.add_argument("--mlp-epochs", type=int, default=200)
    parser.add_argument(
        "--mlp-hidden",
        type=int,
        default=None,
        help="MLP hidden width (default: chosen so the MLP has about GrNet's parameter count)",
    )
    parser.add_argument(
        "--train-limit",
        type=int,
        default=None,
        help="use about N evenly spaced samples of each split (smoke runs)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--no-plot", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start_time = time.perf_counter()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    x_train, y_train, x_test, y_test = load_data()
    if args.train_limit is not None:  # evenly spaced subset (the files are sorted by speaker)
        train_step = max(1, len(x_train) // args.train_limit)
        test_step = max(1, len(x_test) // args.train_limit)
        x_train, y_train = x_train[::train_step], y_train[::train_step]
        x_test, y_test = x_test[::test_step], y_test[::test_step]
    x_train, x_test = standardise(x_train, x_test)
    num_classes = 9
    labels = torch.from_numpy(y_train)
    labels_test = torch.from_numpy(y_test)
    results: dict[str, dict[str, float]] = {}

    # GrNet on Gr(12 (delays + 1) + 1, p).
    bases = subspaces(x_train, args).float()
    bases_test = subspaces(x_test, args).float()
    grnet, history = fit_grnet(
        args, bases, labels, generator, bases_test, labels_test, series=x_train
    )
    grnet_parameters = parameter_count(grnet)
    results["grnet"] = {
        "accuracy": accuracy(grnet, bases_test, labels_test),
        "parameters": grnet_parameters,
    }

    # Same subspaces, no learned Grassmann layers: logistic regression on vectorised projectors.
    results["projector_logreg"] = {
        "accuracy": logistic_regression_accuracy(
            projector_features(bases), y_train, projector_features(bases_test), y_test, args.seed
        )
    }
    results["log_euclidean"] = {
        "accuracy": logistic_regression_accuracy(
            log_euclidean_features(x_train), y_train, log_euclidean_features(x_test), y_test,
            args.seed,
        )
    }  # fmt: skip

    # Euclidean MLP of similar parameter count on the padded series.
    flat_t = torch.from_numpy(padded(x_train)).float()
    flat_test_t = torch.from_numpy(padded(x_test)).float()
    mlp, mlp_history = fit_mlp(
        args, grnet_parameters, flat_t, labels, generator, flat_test_t, labels_test, num_classes
    )
    results["mlp"] = {
        "accuracy": accuracy(mlp, flat_test_t, labels_test),
        "parameters": parameter_count(mlp),
    }

    # On-manifold check of every FRMap weight after training (W W^T = I).
    stiefel_error = max(
        (
            module.matrix @ module.weight - torch.eye(module.out_size)
        ).abs().max().item()
        for module in grnet.modules()
        if hasattr(module, "matrix")
    )  # fmt: skip
    seconds = time.perf_counter() - start_time

    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": grnet.state_dict(), "args": vars(args) | {"out": str(args.out)}},
               args.out / "grnet.pt")  # fmt: skip
    if not args.no_plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
        left.plot(history["loss"], label="GrNet")
        left.plot(mlp_history["loss"], label="MLP")
        left.set_xlabel("epoch")
        left.set_ylabel("training cross-entropy")
        left.set_yscale("log")
        left.legend()
        right.plot(history["test_accuracy"], label="GrNet")
        right.plot(mlp_history["test_accuracy"], label="MLP")
        for name, style in (("log_euclidean", "--"), ("projector_logreg", ":")):
            right.axhline(results[name]["accuracy"], linestyle=style, label=name, color="gray")
        right.set_xlabel("epoch")
        right.set_ylabel("test accuracy")
        right.legend()
        save_figure(figure, args.out / "training_curve.png")

    print(f"\nJapaneseVowels, {len(x_train)} train / {len(x_test)} test, seed {args.seed}")
    print(f"{'method':<18}{'test accuracy':>14}{'parameters':>12}")
    for name, values in results.items():
        count = values.get("parameters")
        print(f"{name:<18}{values['accuracy']:>14.4f}{'' if count is None else count:>12}")
    print(f"max |W W^T - I| over FRMap weights after training: {stiefel_error:.2e}")
    print(f"total time {seconds:.1f} s")
    output = {"results": results, "seconds": seconds, "stiefel_error": stiefel_error,
              "history": {"grnet": history, "mlp": mlp_history}}  # fmt: skip
    write_json(args.json, output)
    return output


if __name__ == "__main__":
    main()
