"""ProjectionMetricContrastiveLoss against the textbook formulation of the same loss.

The textbook formulation, InfoNCE as it is commonly written: for each ordered pair of views, the
(N, N) logits -d^2 / tau from the projectors, a log-softmax over each row, and the mean over each
anchor's positives (a dense row-normalised mask). manifoldnn's loss forms the logits once per
unordered pair from projector vectors computed once per view, never materialises the softmax,
gathers the positives at their pairs, and takes both log-sum-exps from one shifted exp (see
``ProjectionMetricContrastiveLoss._log_probabilities``). Both run forward and backward on the same
subspaces and mask in the same process; the script prints the time ratio and the largest
differences of the losses and gradients.

    python benchmarks/contrastive_loss.py                  # the flagship's batch: 6 views of
                                                           # 500 samples of Gr(10, 4), float32
    python benchmarks/contrastive_loss.py --n 30 --p 3     # a larger n (basis cross products)
"""

from __future__ import annotations

import argparse

import torch
from benchmark_common import add_benchmark_arguments, add_options, best_time, write_json

from manifoldnn.linalg import qr_positive
from manifoldnn.losses import ProjectionMetricContrastiveLoss


def textbook_loss(views: torch.Tensor, positives: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean over views and anchors of the positives' mean -log softmax of -d^2 / tau."""
    num_views, _, _, p = views.shape
    projectors = views @ views.transpose(-1, -2)  # (V, N, n, n)
    weight = positives.to(views.dtype) / positives.sum(-1, keepdim=True)
    total = 0.0
    for a in range(num_views):
        for b in range(num_views):
            if a != b:
                kernel = torch.einsum("ikl,jkl->ij", projectors[a], projectors[b])
                log_softmax = torch.log_softmax(-(p - kernel) / tau, -1)
                total = total - (log_softmax * weight).sum(-1).mean()
    return total / (num_views * (num_views - 1))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(
        parser,
        {
            "views": 6,
            "samples": 500,
            "n": 10,
            "p": 4,
            "neighbors": (3, "random positives per anchor"),
            "temperature": 0.5,
        },
    )
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    add_benchmark_arguments(parser, repeats=10)
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.views, args.samples, args.n, args.p)
    views = qr_positive(torch.randn(*shape, generator=generator, dtype=dtype))
    others = torch.randint(args.samples, (args.samples, args.neighbors), generator=generator)
    positives = torch.eye(args.samples, dtype=torch.bool)
    positives[torch.arange(args.samples)[:, None], others] = True
    loss = ProjectionMetricContrastiveLoss(args.temperature)

    def run(function):
        x = views.clone().requires_grad_(True)
        value = function(x)
        value.backward()
        return value.detach(), x.grad

    def ours() -> tuple[torch.Tensor, torch.Tensor]:
        return run(lambda x: loss(x, positives))

    def textbook() -> tuple[torch.Tensor, torch.Tensor]:
        return run(lambda x: textbook_loss(x, positives, args.temperature))

    (value, gradient), (expected, expected_gradient) = ours(), textbook()
    ours_seconds = best_time(ours, args.repeats)
    textbook_seconds = best_time(textbook, args.repeats)
    result = {
        "ours_seconds": ours_seconds,
        "textbook_seconds": textbook_seconds,
        "ratio": textbook_seconds / ours_seconds,
        "loss_difference": abs(value - expected).item(),
        "gradient_difference": (gradient - expected_gradient).abs().max().item(),
        "gradient_scale": expected_gradient.abs().max().item(),
    }
    print(
        f"projection-metric InfoNCE, {args.views} views x {args.samples} samples of "
        f"Gr({args.n}, {args.p}), {args.dtype}, forward + backward, best of {args.repeats} "
        f"({torch.get_num_threads()} torch threads)"
    )
    print(f"  manifoldnn              {1e3 * ours_seconds:9.2f} ms")
    print(f"  textbook formulation    {1e3 * textbook_seconds:9.2f} ms")
    print(f"  ratio textbook/ours     {result['ratio']:9.2f}x")
    print(
        f"  |loss difference| {result['loss_difference']:.2e}; max |gradient difference| "
        f"{result['gradient_difference']:.2e} (largest gradient entry "
        f"{result['gradient_scale']:.2e})"
    )
    write_json(args.json, {"results": {"contrastive_loss": result}})
    return result


if __name__ == "__main__":
    main()
