"""DistributedDataParallel training of GrNet on 2 CPU processes (gloo) with RiemannianAdam equals
single-process training on the combined batch, and keeps every FRMap weight on the Stiefel manifold."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist

from examples.ddp_grnet import GrNetFactory, make_optimizer, spawn_training, train_steps
from manifoldnn.layers import FRMap

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)


def make_batches(steps: int, batch_size: int, seed: int = 0):
    """Class-dependent feature matrices (8 x 5): class k's vectors lie near a fixed 2-plane."""
    generator = torch.Generator().manual_seed(seed)
    planes = torch.linalg.qr(torch.randn(3, 8, 2, generator=generator, dtype=torch.float64))[0]
    batches = []
    for _ in range(steps):
        labels = torch.randint(0, 3, (batch_size,), generator=generator)
        coefficients = torch.randn(batch_size, 2, 5, generator=generator, dtype=torch.float64)
        noise = 0.3 * torch.randn(batch_size, 8, 5, generator=generator, dtype=torch.float64)
        batches.append((planes[labels] @ coefficients + noise, labels))
    return batches


def gradient_scale(model: torch.nn.Module, batch) -> float:
    """Largest gradient entry of the mean cross-entropy of ``model`` on ``batch``."""
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
    scale = max(q.grad.abs().max().item() for q in model.parameters())
    model.zero_grad()
    return scale


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path):
    torch.manual_seed(0)
    # A small float64 GrNet on Gr(8, 2) with projection pooling (ProjMap -> ProjPooling -> OrthMap);
    # the factory lives in an example module so the spawned processes do not import this test file.
    factory = GrNetFactory(
        torch.float64, in_size=8, rank=2, num_classes=3, out_sizes=(6, 4), channels=2, embed=True
    )
    reference = factory()
    for module in reference.modules():
        if isinstance(module, FRMap):
            module.reset_parameters()  # W drawn directly in float64
    initial_state = copy.deepcopy(reference.state_dict())
    steps, batch_size, lr = 6, 8, 0.05
    batches = make_batches(steps=steps, batch_size=batch_size)

    ranks = spawn_training(factory, initial_state, batches, lr, tmp_path, world_size=2)

    # DDP and one process differ only in rounding: the combined-batch gradient is summed in another
    # order (two shard means, then their mean), an error of at most about batch_size * eps * G per
    # entry (G the gradient scale). Adam's step lr * m / (sqrt(v) + adam_eps) is Lipschitz in the
    # gradient with constant at most lr / adam_eps, so each step moves the parameters apart by at
    # most lr / adam_eps * batch_size * eps * G, and the steps add (to first order). A factor 4
    # leaves room for the gradient scale to grow during the 6 steps.
    eps = torch.finfo(torch.float64).eps
    adam_eps = make_optimizer(reference, lr).defaults["eps"]
    scale = gradient_scale(reference, batches[0])
    parameter_tolerance = 4 * steps * lr / adam_eps * batch_size * eps * scale
    single_losses = train_steps(reference, make_optimizer(reference, lr), batches)
    expected = reference.state_dict()
    assert single_losses[-1] < single_losses[0]  # the run actually trains
    for name, value in expected.items():
        first, second = ranks[0]["state_dict"][name], ranks[1]["state_dict"][name]
        assert torch.equal(first, second), f"{name} differs across ranks"
        difference = (first - value).abs().max().item()
        assert difference <= parameter_tolerance, f"{name} differs from 1 process by {difference}"
        assert not torch.equal(value, initial_state[name]), f"{name} was not updated"
        if name.endswith("weight") and value.dim() == 3:  # FRMap: W^T on the Stiefel manifold
            gram = first.transpose(-1, -2) @ first
            eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
            # a retraction-based step keeps W^T W = I to a few eps per step
            assert (gram - eye).abs().max() <= 4 * steps * gram.shape[-1] * eps
    # The mean of the two shard losses is the combined-batch loss at every step, up to the rounding
    # of the mean (a few eps of the loss) and the parameter differences times the gradient's l1 norm.
    parameters = sum(q.numel() for q in reference.parameters())
    loss_tolerance = 4 * eps * max(single_losses) + parameters * 4 * scale * parameter_tolerance
    shard_means = torch.tensor(
        [(a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"])]
    )
    loss_difference = (shard_means - torch.tensor(single_losses)).abs().max().item()
    assert loss_difference <= loss_tolerance


@pytest.mark.slow
def test_ddp_example_runs_with_single_process_baseline(tmp_path):
    pytest.importorskip("aeon", reason="JapaneseVowels is read from aeon's bundled copy")
    import json

    from examples.ddp_grnet import main

    out = tmp_path / "results.json"
    main(["--nprocs", "2", "--steps", "5", "--dtype", "float64", "--out", str(tmp_path),
          "--json", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"ddp_2_processes", "single_process"}
    ddp, single = report["results"]["ddp_2_processes"], report["results"]["single_process"]
    # The bound of the test above with a gradient scale of 1 (the cross-entropy's gradient in the
    # logits and the projector entries the head sees are at most 1 in absolute value).
    eps, adam_eps = torch.finfo(torch.float64).eps, 1e-8  # RiemannianAdam's default eps
    steps, lr, batch_size = 5, 0.01, 30  # the example's --steps 5 and its defaults
    tolerance = 4 * steps * lr / adam_eps * batch_size * eps
    assert report["max_parameter_difference"] <= tolerance  # float64: DDP equals one process
    assert (
        abs(ddp["final_loss"] - single["final_loss"]) <= 4 * eps * single["final_loss"] + tolerance
    )
    assert (tmp_path / "grnet_ddp.pt").exists()
