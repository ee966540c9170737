"""Smoke test of benchmarks/contrastive_loss.py: tiny runs of its ``main`` on both kernel paths."""

import json
import math

import pytest
import torch

from benchmarks import contrastive_loss as bench


@pytest.mark.parametrize("n, p", [(6, 2), (30, 2)])  # projector vectors, basis cross products
def test_benchmark_agrees_with_the_textbook_loss(n, p, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--views", "3", "--samples", "24", "--n", str(n), "--p", str(p), "--repeats", "1"]
    result = bench.main([*argv, "--dtype", "float64", "--json", str(out)])
    # Both compute the same sums in another order: each logit -(p - <P_a, P_b>) / tau is a sum of
    # n^2 products and each log-sum-exp a sum over the N samples, so the two differ by at most a
    # small multiple of (n^2 + N) eps relative to the loss (about log N) and to the gradient scale.
    eps, samples = torch.finfo(torch.float64).eps, 24
    bound = 4 * (n * n + samples) * eps
    assert result["loss_difference"] <= bound * math.log(samples)
    assert result["gradient_difference"] <= bound * result["gradient_scale"]
    assert json.loads(out.read_text())["results"]["contrastive_loss"]["ratio"] == result["ratio"]
