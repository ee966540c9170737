"""Smoke tests of examples/byte_lm.py and benchmarks/sequence.py on tiny settings."""

import json

import pytest
import torch

from benchmarks import sequence
from examples import byte_lm

TINY_MODELS = ["--bdh-layers", "2", "--bdh-embd", "16", "--bdh-neurons", "32"]
TINY_MODELS += ["--gpt-layers", "1", "--gpt-embd", "16", "--chunk-size", "8"]


@pytest.mark.slow
def test_example_runs_on_tiny_settings(tmp_path):
    # the corpus ships with Python and splits in a fixed place
    data = byte_lm.load_corpus()
    train, val = byte_lm.split_corpus(data)
    assert len(data) > 100_000 and len(train) + len(val) == len(data)
    assert bytes(val[:50].tolist()) == data[len(train) : len(train) + 50]
    out = tmp_path / "byte_lm.json"
    argv = ["--budget", "0.5", "--context", "32", "--batch", "2", "--eval-bytes", "1000"]
    argv += ["--evals", "2", "--gen-contexts", "40", "--gen-tokens", "3", "--sample-tokens", "8"]
    argv += TINY_MODELS + ["--out", str(tmp_path), "--json", str(out)]
    report = byte_lm.main(argv)
    assert json.loads(out.read_text())["results"].keys() == {"bdh", "gpt", "linear"}
    for name in ("bdh", "gpt", "linear"):
        row = report["results"][name]
        # untrained bytes cost about 8 bits; a few steps cannot make it worse than uniform by far
        assert 0.0 < row["val_bpb"] < 12.0 and row["train_tokens_per_s"] > 0
    assert 0.0 < report["results"]["bdh"]["active_fraction"] < 1.0
    gen = report["generation"]
    assert set(gen["bdh"]) == set(gen["gpt"]) == {"40"}
    assert gen["bdh"]["40"]["decode_tokens_per_s"] > 0 and gen["gpt"]["40"]["peak_rss_mb"] > 0
    assert (tmp_path / "loss_curves.png").stat().st_size > 0
    assert "=== bdh ===" in (tmp_path / "sample.txt").read_text()


def test_benchmark_runs_and_linear_memory_is_linear(tmp_path):
    out = tmp_path / "sequence.json"
    argv = ["--lengths", "64", "128", "256", "--repeats", "1", "--heads", "2", "--dim", "8"]
    argv += [
        "--bdh-neurons",
        "8",
        "--favor-features",
        "8",
        "--chunk-size",
        "32",
        "--json",
        str(out),
    ]
    report = sequence.main(argv)
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"sdpa", "bdh", "delta", "favor"}
    for method in ("bdh", "delta", "favor"):
        rows = report["results"][method]
        assert rows["256"]["speedup_over_sdpa"] > 0
        # chunked forms save the same tensors for every chunk plus constants (FAVOR+'s features):
        # memory affine in T, so doubling T from 128 to 256 adds twice what 64 to 128 added
        saved = [rows[t]["saved_mb"] for t in ("64", "128", "256")]
        assert saved[2] - saved[1] == pytest.approx(2 * (saved[1] - saved[0]), rel=1e-12)


def test_batches_and_validation_windows_are_consecutive_bytes():
    tokens = torch.arange(1000)
    generator = torch.Generator().manual_seed(0)
    batch = byte_lm.sample_batch(tokens, 16, 4, generator)
    assert batch.shape == (4, 17)
    assert torch.equal(batch - batch[:, :1], torch.arange(17).expand(4, 17))
    again = byte_lm.sample_batch(tokens, 16, 4, torch.Generator().manual_seed(0))
    assert torch.equal(batch, again)  # the same generator state, the same batches
    windows = byte_lm.windows(tokens, 9, 95)  # 95 // 10 = 9 windows of 10 tokens
    assert torch.equal(windows, tokens[:90].view(9, 10))


def test_training_options_keep_help_unless_replaced():
    table = byte_lm.training_options(budget=5.0, context=(32, "length"))
    assert table["budget"] == (5.0, byte_lm.TRAINING_OPTIONS["budget"][1])
    assert table["context"] == (32, "length") and table["batch"] == 8
    with pytest.raises(TypeError, match="unknown option"):
        byte_lm.training_options(steps=3)
