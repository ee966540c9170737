r"""Multi-process (DistributedDataParallel) training of GrNet with geoopt's RiemannianAdam.

Each process holds a replica of :class:`~manifoldnn.layers.GrNet`; every step each rank computes the
mean cross-entropy on its own shard of the global batch, DDP averages the gradients (all-reduce), and
every rank applies the same RiemannianAdam step, so the FRMap weights stay identical across ranks and
on the Stiefel manifold.  With equal shards the averaged gradient is the gradient of the mean loss on
the whole global batch, i.e. the run equals single-process training on the combined batch.

Launch on one machine with 2 CPU processes (gloo backend)::

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 examples/ddp_grnet.py --steps 200

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; the script reads them
through ``init_method="env://"``.  Several machines: ``torchrun --nnodes N --node_rank K
--rdzv_endpoint HOST:PORT --nproc_per_node P examples/ddp_grnet.py``.  Without ``torchrun`` the
script spawns the processes itself: ``python examples/ddp_grnet.py --nprocs 2`` (it binds
127.0.0.1 on a free port chosen by the OS).  Data: JapaneseVowels from aeon's bundled copy (see
``examples/grassmann_classification.py``). Rank 0 then trains the same GrNet in one process on the
same global batches from the same initial weights (the baseline), prints both test accuracies and
the largest parameter difference, saves the DDP model to ``--out`` and the table to ``--json``.
What to expect: in float64 (``--dtype float64``) the DDP and single-process parameters agree to
rounding; in float32 (the default) the rounding differences between the shard means and the
full-batch mean are amplified by Adam's normalised steps, so the parameters drift apart over many
steps while the test accuracies stay the same. Measured figures are in
``docs/results/ddp_grnet.md``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import socket
import time
from pathlib import Path

import geoopt
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from example_common import add_options, add_output_arguments, write_json
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from manifoldnn.datasets import window_subspaces
from manifoldnn.models import GrNet

# a rank that waits longer than this for the others fails instead of hanging (gloo's default is
# 30 minutes)
PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reports free (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return geoopt.optim.RiemannianAdam(model.parameters(), lr=lr)


def train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
) -> list[float]:
    """One optimiser step per (inputs, labels) batch on the mean cross-entropy; returns the losses."""
    losses = []
    for inputs, labels in batches:
        loss = nn.functional.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def shard(batch: tuple[torch.Tensor, torch.Tensor], rank: int, world_size: int):
    """Rank's contiguous equal shard of a global batch (its size must be divisible by world_size)."""
    inputs, labels = batch
    if len(inputs) % world_size:
        raise ValueError(
            f"global batch size {len(inputs)} is not divisible by world size {world_size}"
        )
    size = len(inputs) // world_size
    return inputs[rank * size : (rank + 1) * size], labels[rank * size : (rank + 1) * size]


class GrNetFactory:
    """Picklable model factory for spawned processes: ``GrNetFactory(**kwargs)()`` is
    ``GrNet(**kwargs)`` converted to ``dtype``.  The default is the GrNet of
    ``examples/grassmann_classification.py`` on Gr(49, 3) (3 delays)."""

    def __init__(self, dtype: torch.dtype = torch.float32, **kwargs) -> None:
        defaults = dict(
            in_size=49, rank=3, num_classes=9, out_sizes=(32, 16), channels=8, pool_size=2
        )
        self.kwargs = defaults | {"embed": False} | kwargs
        self.dtype = dtype

    def __call__(self) -> nn.Module:
        return GrNet(**self.kwargs).to(self.dtype)


def _global_batches(count: int, steps: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """Indices of the global batches, the same on every rank and for the single-process run."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(count, generator=generator)[:batch_size] for _ in range(steps)]


def _torchrun_main(args: argparse.Namespace) -> None:
    try:  # the data pipeline of the classification example, imported as the tests import it
        from examples.grassmann_classification import accuracy, load_data, standardise
    except ModuleNotFoundError:  # run as a script: examples/ is sys.path[0]
        from grassmann_classification import accuracy, load_data, standardise
    from tqdm import tqdm

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="env://", timeout=PROCESS_GROUP_TIMEOUT)
    try:
        x_train, y_train, x_test, y_test = load_data()
        x_train, x_test = standardise(x_train, x_test)
        dtype = getattr(torch, args.dtype)
        bases = window_subspaces(x_train, 3, delays=3).to(dtype)  # computed in float64
        bases_test = window_subspaces(x_test, 3, delays=3).to(dtype)
        labels, labels_test = torch.from_numpy(y_train), torch.from_numpy(y_test)
        torch.manual_seed(
            args.seed
        )  # same initial weights everywhere (DDP also broadcasts rank 0's)
        model = GrNetFactory(dtype)()
        initial_state = copy.deepcopy(model.state_dict())
        replica = DistributedDataParallel(model)
        optimizer = make_optimizer(replica, args.lr)
        batches = _global_batches(len(bases), args.steps, args.batch_size, args.seed)
        start = time.perf_counter()
        ddp_losses = []
        for index in tqdm(batches, desc=f"DDP, {world_size} processes", disable=rank != 0):
            local = shard((bases[index], labels[index]), rank, world_size)
            ddp_losses += train_steps(replica, optimizer, [local])
        ddp_seconds = time.perf_counter() - start
        global_losses = torch.tensor(ddp_losses, dtype=torch.float64)
        dist.all_reduce(global_losses)  # mean of the shard losses = loss on the global batch
        global_losses /= world_size
        if rank == 0:  # the baseline, the table and the report
            # Baseline in the same run: one process, the same initial weights and global batches.
            single = GrNetFactory(dtype)()
            single.load_state_dict(initial_state)
            start = time.perf_counter()
            pairs = ((bases[i], labels[i]) for i in batches)
            single_losses = train_steps(
                single, make_optimizer(single, args.lr), tqdm(pairs, "1 process", len(batches))
            )
            single_seconds = time.perf_counter() - start
            difference = max(
                (a - b).abs().max().item()
                for a, b in zip(model.state_dict().values(), single.state_dict().values())
            )
            results = {
                f"ddp_{world_size}_processes": {
                    "accuracy": accuracy(model, bases_test, labels_test),
                    "final_loss": global_losses[-1].item(),
                    "seconds": ddp_seconds,
                },
                "single_process": {
                    "accuracy": accuracy(single, bases_test, labels_test),
                    "final_loss": single_losses[-1],
                    "seconds": single_seconds,
                },
            }
            print(
                f"\nJapaneseVowels, GrNet, {args.steps} steps of {args.batch_size} (seed {args.seed})"
            )
            print(f"{'method':<20}{'test accuracy':>14}{'final loss':>12}{'seconds':>9}")
            for name, row in results.items():
                print(
                    f"{name:<20}{row['accuracy']:>14.4f}{row['final_loss']:>12.4f}{row['seconds']:>9.1f}"
                )
            print(f"max |parameter difference| DDP vs 1 process: {difference:.2e}")
            args.out.mkdir(parents=True, exist_ok=True)
            torch.save(
                {"state_dict": model.state_dict(), "args": vars(args)}, args.out / "grnet_ddp.pt"
            )
            report = {"results": results, "max_parameter_difference": difference,
                      "world_size": world_size, "steps": args.steps}  # fmt: skip
            write_json(args.json, report)
        # every rank leaves together: a rank that tears its process group down while another
        # still runs can leave that one hanging in its own teardown
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn_worker(rank: int, world_size: int, port: int, args: argparse.Namespace) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    _torchrun_main(args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="DDP training of GrNet on JapaneseVowels")
    add_output_arguments(parser, "ddp_grnet")
    add_options(
        parser,
        {
            "steps": 200,
            "batch_size": (30, "global batch size"),
            "lr": 0.01,
            "nprocs": (2, "processes when not under torchrun"),
        },
    )
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args(argv)
    if "RANK" in os.environ:
        _torchrun_main(args)
    else:
        mp.spawn(_spawn_worker, args=(args.nprocs, free_port(), args), nprocs=args.nprocs)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
