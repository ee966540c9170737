"""Benchmark of the GrNet block, one run, ratio against a plain peer timed in the same process.

Block (manifoldnn): ``FRMap (ManifoldParameter on Stiefel) -> ReOrth (sign-fixed QR) -> ProjMap ->
ProjPooling("across") -> OrthMap (gap-safe eigh backward) -> FRMap -> ReOrth -> ProjMap``, trained
with ``geoopt.optim.RiemannianAdam``.

Peer (same architecture, no manifold parameter): ``nn.Linear`` weights used as W in ``W X`` (no bias,
unconstrained), ``torch.linalg.qr`` (no sign fix), ``X X^T``, channel mean, ``torch.linalg.eigh`` top-p
eigenvectors (its own backward), trained with ``torch.optim.Adam``.

Both are timed on the same inputs (bases of Gr(n, p), float32) for forward + backward, and for forward
+ backward + optimiser step; the table prints milliseconds and the manifoldnn / peer ratio. A last
line checks that the two compute the same function: with the same weights, in float64, the largest
difference of their outputs and the eigengap of the pooled projectors that bounds it.
``--device cuda`` times both on the GPU (synchronised); the agreement check stays on the CPU.
Run: ``OMP_NUM_THREADS=1 python benchmarks/grassmann_layers.py``.
"""

from __future__ import annotations

import argparse

import geoopt
import torch
from benchmark_common import add_benchmark_arguments, add_options, best_time, write_json
from torch import nn

from manifoldnn.layers import FRMap, OrthMap, ProjMap, ProjPooling, ReOrth


class ManifoldBlock(nn.Module):
    def __init__(self, n: int, d1: int, d2: int, p: int, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            FRMap(n, d1, channels=channels),
            ReOrth(),
            ProjMap(),
            ProjPooling("across"),
            OrthMap(p),
            FRMap(d1, d2),
            ReOrth(),
            ProjMap(),
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y.unsqueeze(-3))


class PlainBlock(nn.Module):
    """Same computation with nn.Linear weights and unconstrained updates."""

    def __init__(self, n: int, d1: int, d2: int, p: int, channels: int) -> None:
        super().__init__()
        self.first = nn.ModuleList(nn.Linear(n, d1, bias=False) for _ in range(channels))
        self.second = nn.Linear(d1, d2, bias=False)
        self.p = p

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        weights = torch.stack([linear.weight for linear in self.first])  # (C, d1, n)
        q = torch.linalg.qr(weights @ y.unsqueeze(-3))[0]
        pooled = (q @ q.transpose(-1, -2)).mean(-3)
        top = torch.linalg.eigh(pooled)[1][..., -self.p :]
        q2 = torch.linalg.qr(self.second.weight @ top)[0]
        return q2 @ q2.transpose(-1, -2)


def output_difference(sizes: tuple[int, int, int, int, int], batch: int, seed: int) -> dict:
    """Both blocks in float64 with the same weights (the plain block's ``nn.Linear`` weights set to
    the FRMap matrices): the largest difference of their outputs (projectors, so the sign of the
    QR factors does not matter) and the smallest eigengap ``lambda_p - lambda_{p+1}`` of the pooled
    projectors whose top-p eigenvectors OrthMap takes (the sensitivity of that step)."""
    n, _, _, p, _ = sizes
    generator = torch.Generator().manual_seed(seed)
    y = torch.linalg.qr(torch.randn(batch, n, p, generator=generator, dtype=torch.float64))[0]
    ours, plain = ManifoldBlock(*sizes).double(), PlainBlock(*sizes).double()
    first, second = ours.net[0].matrix.detach(), ours.net[5].matrix.detach()
    with torch.no_grad():
        for channel, linear in enumerate(plain.first):
            linear.weight.copy_(first[channel])
        plain.second.weight.copy_(second.reshape(plain.second.weight.shape))
        q = torch.linalg.qr(first @ y.unsqueeze(-3))[0]
        eigenvalues = torch.linalg.eigvalsh((q @ q.transpose(-1, -2)).mean(-3))
        difference = (ours(y) - plain(y)).abs().max().item()
    gap = (eigenvalues[..., -p] - eigenvalues[..., -p - 1]).min().item()
    return {"max_output_difference": difference, "min_eigengap": gap}


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Print the timing table and the agreement check; return the ratios (``fb``, ``step``) and
    :func:`output_difference`'s figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_options(
        parser, {"batch": 64, "n": 20, "d1": 16, "d2": 10, "p": 4, "channels": 4, "inner": 20}
    )
    add_benchmark_arguments(parser, repeats=5, device=True)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    sizes = (args.n, args.d1, args.d2, args.p, args.channels)
    y = torch.linalg.qr(torch.randn(args.batch, args.n, args.p))[0].to(device)
    target = torch.randn(args.d2, args.d2).to(device)
    models = {"manifoldnn": ManifoldBlock(*sizes), "plain": PlainBlock(*sizes)}
    models = {name: model.to(device) for name, model in models.items()}
    optimizers = {
        "manifoldnn": geoopt.optim.RiemannianAdam(models["manifoldnn"].parameters(), lr=1e-3),
        "plain": torch.optim.Adam(models["plain"].parameters(), lr=1e-3),
    }

    def forward_backward(name: str) -> None:
        models[name].zero_grad()
        (models[name](y) * target).sum().backward()

    def training_step(name: str) -> None:
        forward_backward(name)
        optimizers[name].step()

    times: dict[str, float] = {}
    for name in models:
        times[f"{name}_fb"] = best_time(
            lambda n=name: forward_backward(n), args.repeats, args.inner
        )
        times[f"{name}_step"] = best_time(lambda n=name: training_step(n), args.repeats, args.inner)

    print(
        f"GrNet block, batch {args.batch}, Gr({args.n}, {args.p}) -> {args.channels} x "
        f"Gr({args.d1}, {args.p}) -> pool -> Gr({args.d2}, {args.p}), float32, "
        f"{args.device}, {torch.get_num_threads()} thread(s)"
    )
    print(f"{'':<28}{'manifoldnn ms':>14}{'plain ms':>10}{'ratio':>8}")
    ratios = {}
    for key, label in (("fb", "forward + backward"), ("step", "forward + backward + step")):
        ours, peer = times[f"manifoldnn_{key}"], times[f"plain_{key}"]
        ratios[key] = ours / peer
        print(f"{label:<28}{1e3 * ours:>14.3f}{1e3 * peer:>10.3f}{ratios[key]:>8.2f}")
    agreement = output_difference(sizes, args.batch, args.seed)
    print(
        f"same weights, float64: max |manifoldnn - plain| {agreement['max_output_difference']:.1e} "
        f"(smallest eigengap of the pooled projectors {agreement['min_eigengap']:.2e})"
    )
    results = {
        name: {"fb_ms": 1e3 * times[f"{name}_fb"], "step_ms": 1e3 * times[f"{name}_step"]}
        for name in models
    }
    write_json(args.json, {"results": results, "ratios": ratios | agreement, "config": vars(args)})
    return ratios | agreement


if __name__ == "__main__":
    main()
