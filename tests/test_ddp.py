"""The smoke test of ``examples/ddp_grnet.py``: DistributedDataParallel training of GrNet on 2 CPU
processes (gloo) with RiemannianAdam equals single-process training on the combined batch, to the
rounding bound below."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)


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
    # DDP and one process differ only in rounding: the combined-batch gradient is summed in another
    # order (two shard means, then their mean), an error of at most about batch_size * eps * G per
    # entry (G the gradient scale). Adam's step lr * m / (sqrt(v) + adam_eps) is Lipschitz in the
    # gradient with constant at most lr / adam_eps, so each step moves the parameters apart by at
    # most lr / adam_eps * batch_size * eps * G, and the steps add (to first order). G = 1 here:
    # the cross-entropy's gradient in the logits and the projector entries the head sees are at
    # most 1 in absolute value.
    eps, adam_eps = torch.finfo(torch.float64).eps, 1e-8  # RiemannianAdam's default eps
    steps, lr, batch_size = 5, 0.01, 30  # the example's --steps 5 and its defaults
    tolerance = 4 * steps * lr / adam_eps * batch_size * eps
    assert report["max_parameter_difference"] <= tolerance  # float64: DDP equals one process
    assert (
        abs(ddp["final_loss"] - single["final_loss"]) <= 4 * eps * single["final_loss"] + tolerance
    )
    assert (tmp_path / "grnet_ddp.pt").exists()
