"""Deep residual stacks: pre-norm, DeepNorm and hyper-connections (free, mHC, Birkhoff, orthogonal).

A narrow byte-level GPT (``manifoldnn.models.GPT``, width 64) on the text that ships with Python
(``pydoc_data.topics``, the corpus of ``examples/byte_lm.py``) at depth 12, 24 and 48, every model
trained on the same batches for the same number of tokens with the same optimiser
(``geoopt.optim.RiemannianAdam``, which the Birkhoff variant needs and which is Adam for the
others), warm-up and cosine schedule and gradient clipping at 1. The residual schemes
(``GPTConfig.residual``):

- ``prenorm``: :math:`x + G(\\mathrm{LN}(x))`, the library's default;
- ``deepnorm``: :math:`\\mathrm{LN}(\\alpha x + G(x))` with DeepNorm's alpha and beta;
- ``hc``: hyper-connections over 4 streams with a free residual matrix (Zhu et al. 2025);
- ``mhc``: mHC, the residual matrix made doubly stochastic by 20 Sinkhorn iterations
  (``hc_constraint="sinkhorn"``);
- ``birkhoff``: a static residual matrix on the Birkhoff polytope, trained by the Riemannian
  optimiser;
- ``orthogonal``: a static orthogonal residual matrix;
- ``reference``: the reference package's mHC (``hyper-connections`` 0.4.11,
  ``ManifoldConstrainedHyperConnections``) wired into the same GPT in place of ``mhc``'s layers.

Per depth and method it prints the validation bits per byte, the count of loss spikes (a step whose
training loss exceeds 1.2 times the median of the 25 before it), the largest gradient norm (before
clipping), the composite gain of the residual maps at the end (the largest absolute row or column
sum of the product of the ``H^res`` of all layers, the largest over the tokens of a validation batch,
:func:`manifoldnn.layers.composite_gain`), the operator 2-norm of that product, and the training
step time.

    python examples/deep_residuals.py --seed 0 --out out/deep_residuals --json out/deep_residuals.json

One thread by default; ``--steps`` and ``--seeds`` set the budget (the default, 1 seed of 100 steps
of 8 x 64 bytes for 7 methods at 3 depths, took 65 minutes of wall-clock as two processes, depth 48
and depths 12 + 24, on a 2-core machine shared with other jobs). ``--combine A.json B.json`` prints
the table and draws the plots of runs made separately (e.g. one depth per process).
It writes ``loss_curves.png`` (training bits per byte against steps, one panel per depth) and
``composite_gain.png`` (gain against depth). Measured figures are in
``docs/results/deep_residuals.md``.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import geoopt
import torch
from byte_lm import (
    bits_per_byte,
    cosine_decay,
    load_corpus,
    sample_batch,
    split_corpus,
    train_step,
    training_options,
    windows,
)
from example_common import (
    example_parser,
    save_figure,
    write_json,
    write_report,
)
from tqdm import tqdm

from manifoldnn.layers import HyperConnections, composite_gain
from manifoldnn.models import GPT, GPTConfig

METHODS = {
    "prenorm": {"residual": "prenorm"},
    "mhc": {"residual": "hyper", "hc_constraint": "sinkhorn"},
    "reference": {"residual": "hyper", "hc_constraint": "sinkhorn"},
    "birkhoff": {"residual": "hyper", "hc_constraint": "birkhoff"},
    "orthogonal": {"residual": "hyper", "hc_constraint": "orthogonal"},
    "hc": {"residual": "hyper", "hc_constraint": None},
    "deepnorm": {"residual": "deepnorm"},
}


def build_model(method: str, depth: int, args) -> GPT:
    config = GPTConfig(
        num_layers=depth, dim=args.dim, num_heads=4, num_streams=args.streams, **METHODS[method]
    )
    model = GPT(config, validate=False)
    if method == "reference":
        _use_reference_mhc(model, args.streams)
    return model


def _use_reference_mhc(model: GPT, streams: int) -> None:
    """Replace every HyperConnections of the model by the reference package's mHC around the same
    branch; it records each Sinkhorn output so that the composite gain can be read."""
    from hyper_connections.mHCv2 import ManifoldConstrainedHyperConnections

    index = 0
    for block in model.blocks:
        for name, child in list(block.named_children()):
            if isinstance(child, HyperConnections):
                peer = ManifoldConstrainedHyperConnections(
                    streams, dim=model.config.dim, branch=child.branch, layer_index=index
                )
                sinkhorn = peer.residual_mix_constraint_fn

                def recorded(logits, sinkhorn=sinkhorn, peer=peer):
                    out = sinkhorn(logits)
                    if getattr(peer, "record", None) is not None:
                        # the peer mixes new[t] = sum_s alpha[s, t] x[s]: H^res = alpha^T
                        peer.record.append(out.detach()[0].transpose(-1, -2))
                    return out

                peer.residual_mix_constraint_fn = recorded
                setattr(block, name, peer)
                index += 1


def residual_gain(model: GPT, method: str, batch: torch.Tensor) -> tuple:
    """Composite gain of the residual maps over a validation batch (largest over its tokens), and
    the composite's operator 2-norm (the gain that an orthogonal mixing keeps at 1)."""
    if METHODS[method]["residual"] != "hyper":
        return None, None  # a plain residual: the identity (DeepNorm: scaled and normalised)
    modules = [
        m
        for block in model.blocks
        for m in block.children()
        if isinstance(m, HyperConnections) or hasattr(m, "residual_mix_constraint_fn")
    ]
    matrices = []
    if method == "reference":
        for module in modules:
            module.record = matrices
    else:
        hooks = [
            module.register_forward_pre_hook(
                lambda module, inputs: matrices.append(module.residual_matrix(inputs[0]).detach())
            )
            for module in modules
        ]
    model.eval()
    with torch.no_grad():
        model(batch)
    model.train()
    if method == "reference":
        for module in modules:
            module.record = None
    else:
        for hook in hooks:
            hook.remove()
    shape = torch.broadcast_shapes(*(m.shape for m in matrices))
    stacked = torch.stack([m.expand(shape) for m in matrices]).to(torch.float64)
    product = stacked[0]
    for matrix in stacked[1:]:
        product = matrix @ product
    spectral = float(torch.linalg.matrix_norm(product, ord=2).max())
    return float(composite_gain(stacked).max()), spectral


def count_spikes(losses: list[float], window: int = 25, factor: float = 1.2) -> int:
    """Steps whose loss exceeds ``factor`` times the median of the ``window`` before them."""
    return sum(
        loss > factor * statistics.median(losses[step - window : step])
        for step, loss in enumerate(losses)
        if step >= window
    )


def train(method, depth, seed, train_tokens, eval_windows, args, bar) -> dict:
    torch.manual_seed(seed)
    model = build_model(method, depth, args)
    generator = torch.Generator().manual_seed(seed)  # the same batches for every method
    optimizer = geoopt.optim.RiemannianAdam(model.parameters(), lr=args.lr)
    losses, grad_norms, seconds = [], [], 0.0
    warmup = max(1, args.steps // 20)
    for step in range(args.steps):
        if step < warmup:
            scale = (step + 1) / warmup
        else:
            scale = cosine_decay((step - warmup) / (args.steps - warmup))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * scale
        batch = sample_batch(train_tokens, args.context, args.batch, generator)
        t0 = time.process_time()
        loss, norm = train_step(model, optimizer, batch)
        seconds += time.process_time() - t0
        losses.append(float(loss) / math.log(2.0))
        grad_norms.append(float(norm))
        bar.update(1)
    finite = all(math.isfinite(x) for x in losses)
    gain, spectral = residual_gain(model, method, eval_windows[: args.batch, :-1])
    return {
        "method": method,
        "depth": depth,
        "seed": seed,
        "val_bpb": bits_per_byte(model, eval_windows, args.batch) if finite else float("nan"),
        "loss_spikes": count_spikes(losses),
        "max_grad_norm": max(grad_norms),
        "composite_gain": gain,
        "composite_norm2": spectral,
        "step_seconds": seconds / args.steps,
        "params": sum(p.numel() for p in model.parameters()),
        "curve": losses,
    }


def summarise(runs: list[dict]) -> dict:
    """``{"method@depth": {metric: mean over seeds}}`` plus the per-seed spread of val_bpb."""
    results = {}
    for key in sorted({(r["method"], r["depth"]) for r in runs}, key=lambda k: (k[1], k[0])):
        group = [r for r in runs if (r["method"], r["depth"]) == key]
        row = {"seeds": len(group)}
        metrics = ("val_bpb", "loss_spikes", "max_grad_norm", "composite_gain", "composite_norm2")
        for metric in (*metrics, "step_seconds"):
            values = [r[metric] for r in group if r[metric] is not None]
            row[metric] = statistics.fmean(values) if values else None
        bpb = [r["val_bpb"] for r in group]
        row["val_bpb_std"] = statistics.stdev(bpb) if len(bpb) > 1 else 0.0
        row["params"] = group[0]["params"]
        results[f"{key[0]}@{key[1]}"] = row
    return results


def print_table(results: dict) -> None:
    print(f"\n{'method@depth':<18}{'val bpb':>9}{'+-':>7}{'spikes':>8}{'max |g|':>9}"
          f"{'gain':>10}{'2-norm':>9}{'step s':>8}{'params':>10}")  # fmt: skip
    for key, row in results.items():
        gain = "-" if row["composite_gain"] is None else f"{row['composite_gain']:.3g}"
        norm2 = "-" if row["composite_norm2"] is None else f"{row['composite_norm2']:.3g}"
        print(f"{key:<18}{row['val_bpb']:>9.4f}{row['val_bpb_std']:>7.4f}"
              f"{row['loss_spikes']:>8.1f}{row['max_grad_norm']:>9.2f}{gain:>10}{norm2:>9}"
              f"{row['step_seconds']:>8.3f}{row['params']:>10,}")  # fmt: skip
    depths = sorted({int(k.split("@")[1]) for k in results})
    for depth in depths:
        base = results.get(f"prenorm@{depth}")
        if base is None:
            continue
        notes = []
        for method in ("mhc", "birkhoff", "orthogonal", "reference", "hc", "deepnorm"):
            row = results.get(f"{method}@{depth}")
            if row is not None and math.isfinite(row["val_bpb"]):
                notes.append(
                    f"{method} {100 * (row['val_bpb'] / base['val_bpb'] - 1):+.1f}% bpb, "
                    f"{100 * (row['step_seconds'] / base['step_seconds'] - 1):+.0f}% time"
                )
        print(f"depth {depth} vs prenorm: " + "; ".join(notes))


def plot(runs: list[dict], results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted({r["depth"] for r in runs})
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    colours = {m: f"C{i}" for i, m in enumerate(METHODS)}
    fig, axes = plt.subplots(1, len(depths), figsize=(4.5 * len(depths), 4), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        for method in methods:
            curves = [r["curve"] for r in runs if r["method"] == method and r["depth"] == depth]
            if not curves:
                continue
            mean = [statistics.fmean(v) for v in zip(*curves)]
            window = max(1, len(mean) // 30)
            smooth = [statistics.fmean(mean[max(0, i - window) : i + 1]) for i in range(len(mean))]
            ax.plot(smooth, color=colours[method], label=method)
        ax.set_title(f"depth {depth}")
        ax.set_xlabel("step")
        ax.set_ylabel("training bits per byte")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    save_figure(fig, out / "loss_curves.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    for method in methods:
        points = [
            (d, results[f"{method}@{d}"]["composite_gain"])
            for d in depths
            if f"{method}@{d}" in results and results[f"{method}@{d}"]["composite_gain"]
        ]
        if points:
            ax.plot(*zip(*points), "o-", color=colours[method], label=method)
    ax.set_xlabel("depth (blocks; 2 residual maps each)")
    ax.set_ylabel("composite gain (max abs row/column sum)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, out / "composite_gain.png")


def main(argv: list[str] | None = None) -> dict:
    parser = example_parser(
        __doc__,
        "deep_residuals",
        {
            **training_options("threads", "context", "batch", "lr", context=64),
            "steps": (100, "training steps per run (equal tokens: steps x batch x context)"),
            "seeds": (1, "seeds per method and depth, from --seed on"),
            "dim": 64,
            "streams": (4, "residual streams of the hyper-connection methods"),
            **training_options("eval_bytes", eval_bytes=8192),
        },
    )
    parser.add_argument("--depths", type=int, nargs="+", default=[12, 24, 48])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--combine", type=Path, nargs="*", default=None,
                        help="JSON files of earlier runs: print and plot them together")  # fmt: skip
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)

    if args.combine:
        runs = [run for path in args.combine for run in json.loads(path.read_text())["runs"]]
    else:
        train_tokens, val_tokens = split_corpus(load_corpus())
        eval_windows = windows(val_tokens, args.context, args.eval_bytes)
        seeds = range(args.seed, args.seed + args.seeds)
        total = len(args.depths) * len(args.methods) * len(seeds) * args.steps
        runs = []
        with tqdm(total=total, desc="training", unit="step") as bar:
            for depth in args.depths:
                for method in args.methods:
                    for seed in seeds:
                        bar.set_postfix_str(f"{method}@{depth} seed {seed}")
                        runs.append(
                            train(method, depth, seed, train_tokens, eval_windows, args, bar)
                        )
                        # after every run, so that an interrupted measurement keeps what it made
                        write_json(args.json, {"results": summarise(runs), "runs": runs})
    results = summarise(runs)
    print_table(results)
    plot(runs, results, args.out)
    report = write_report(args, results, start, runs=runs)
    print(f"\nwrote {args.out / 'loss_curves.png'} and {args.out / 'composite_gain.png'}; "
          f"{report['seconds']:.0f} s in all")  # fmt: skip
    return report


if __name__ == "__main__":
    main()
