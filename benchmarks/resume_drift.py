"""Resume drift of the Riemannian optimisers: geoopt's classes against ``manifoldnn.optim``.

A model with a Grassmann Gr(12, 3) basis, a batch of two Stiefel St(8, 2) frames and a Euclidean
vector trains ``--before`` steps; model and optimiser ``state_dict`` s are saved with
``torch.save``/``torch.load`` ("file"), deep-copied ("deepcopy-state"), or the (model, optimiser)
pair is deep-copied ("deepcopy-pair"); the copy and the original then train ``--after`` more steps
on the same loss. The figure is the largest absolute entry-wise difference of the parameters between
the resumed and the uninterrupted run (0 means bit-identical), for RiemannianAdam (lr ``--lr``) and
RiemannianSGD (momentum 0.9), float32 and float64.

Run: ``OMP_NUM_THREADS=1 python benchmarks/resume_drift.py [--after 8] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import copy
import io
from pathlib import Path

import geoopt
import torch
from benchmark_common import add_options, write_json

import manifoldnn.optim
from manifoldnn.manifolds import Grassmann

ROUTES = ("file", "deepcopy-state", "deepcopy-pair")
FAMILIES = {
    "geoopt": {"adam": geoopt.optim.RiemannianAdam, "sgd": geoopt.optim.RiemannianSGD},
    "manifoldnn.optim": {
        "adam": manifoldnn.optim.RiemannianAdam,
        "sgd": manifoldnn.optim.RiemannianSGD,
    },
}


def make_model(dtype: torch.dtype, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Module()
    basis = torch.linalg.qr(torch.randn(12, 3, generator=generator, dtype=torch.float64))[0]
    frames = torch.linalg.qr(torch.randn(2, 8, 2, generator=generator, dtype=torch.float64))[0]
    model.basis = geoopt.ManifoldParameter(basis.to(dtype), manifold=Grassmann())
    model.frames = geoopt.ManifoldParameter(frames.to(dtype), manifold=geoopt.Stiefel())
    model.bias = torch.nn.Parameter(
        torch.randn(5, generator=generator, dtype=torch.float64).to(dtype)
    )
    return model


def loss(model: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    rayleigh = torch.trace(model.basis.mT @ a @ model.basis)
    frames = (model.frames.mT @ b @ model.frames).diagonal(dim1=-2, dim2=-1).sum()
    return -rayleigh - frames + ((model.bias - c) ** 2).sum()


def drift(optimizer_cls, kwargs: dict, dtype: torch.dtype, route: str, before: int, after: int):
    generator = torch.Generator().manual_seed(7)
    a, b = (torch.randn(k, k, generator=generator, dtype=torch.float64) for k in (12, 8))
    data = (
        (a + a.mT).to(dtype),
        (b + b.mT).to(dtype),
        torch.randn(5, generator=generator, dtype=torch.float64).to(dtype),
    )

    def train(model, optimizer, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            loss(model, *data).backward()
            optimizer.step()

    model = make_model(dtype, 0)
    optimizer = optimizer_cls(model.parameters(), **kwargs)
    train(model, optimizer, before)
    if route == "deepcopy-pair":
        other, other_optimizer = copy.deepcopy((model, optimizer))
    else:
        checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        if route == "file":
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            buffer.seek(0)
            checkpoint = torch.load(buffer, weights_only=True)
        else:
            checkpoint = copy.deepcopy(checkpoint)
        other = make_model(dtype, 1)
        other_optimizer = optimizer_cls(other.parameters(), **kwargs)
        other.load_state_dict(checkpoint["model"])
        other_optimizer.load_state_dict(checkpoint["optimizer"])
    train(model, optimizer, after)
    train(other, other_optimizer, after)
    others = dict(other.named_parameters())
    return max((p - others[n]).abs().max().item() for n, p in model.named_parameters())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(
        parser,
        {
            "before": (4, "steps before the checkpoint"),
            "after": (8, "steps after it"),
            "lr": 0.02,
        },
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = {
        "adam": {"lr": args.lr},
        "sgd": {"lr": args.lr, "momentum": 0.9},
    }
    results: dict = {}
    print(f"{'family':18} {'optimiser':6} {'dtype':8} " + " ".join(f"{r:>15}" for r in ROUTES))
    for family, classes in FAMILIES.items():
        for kind, kwargs in settings.items():
            for dtype in (torch.float32, torch.float64):
                row = {
                    route: drift(classes[kind], kwargs, dtype, route, args.before, args.after)
                    for route in ROUTES
                }
                name = str(dtype).removeprefix("torch.")
                results[f"{family}/{kind}/{name}"] = row
                print(
                    f"{family:18} {kind:6} {name:8} " + " ".join(f"{v:15.3e}" for v in row.values())
                )
    report = {"results": results, "settings": vars(args) | {"json": str(args.json)}}
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
