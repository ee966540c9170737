"""Smoke test of examples/attention_systems.py on tiny settings."""

import json
import statistics

import pytest

from examples import attention_systems


@pytest.mark.slow
def test_example_runs_on_tiny_settings(tmp_path):
    out = tmp_path / "attention_systems.json"
    argv = ["--tokens", "64", "--context", "16", "--batch", "2", "--eval-bytes", "300"]
    argv += ["--seeds", "2", "--layers", "1", "--dim", "16", "--heads", "4", "--groups", "2"]
    argv += ["--decode-context", "24", "--decode-tokens", "2", "--recompute-tokens", "1"]
    argv += ["--eval-lengths", "16", "48", "--out", str(tmp_path), "--json", str(out)]
    argv += ["--parts", "cache", "extrapolation", "linear", "--linear-lengths", "16", "48"]
    argv += ["--linear-tokens", "96", "--step-tokens", "48", "--codebook", "8", "--features", "8"]
    argv += ["--linear-chunk", "8"]
    report = attention_systems.main(argv)
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"mha", "gqa", "mqa", "mla", "mla_quarter", "extrapolation", "linear"}
    linear = results["linear"]
    assert set(linear) == {
        "softmax",
        "softmax_nope",
        "vq",
        "vq_rope",
        "favor+",
        "favor++",
        "relu2",
        "delta",
        "bdh",
    }
    for rows in linear.values():
        assert set(rows) == {"16", "48"}
        # the same training tokens for every model at a length
        assert [rows[n]["train_tokens"] for n in ("16", "48")] == [96, 96]
        assert all(row["val_bpb"] > 0 and row["train_tokens_per_s"] > 0 for row in rows.values())
    # two seeds: every figure is the mean of the seeds' own
    assert len(report["per_seed"]) == 2
    for name, rows in linear.items():
        values = [run["linear"][name]["16"]["val_bpb"] for run in report["per_seed"]]
        assert rows["16"]["val_bpb"] == pytest.approx(statistics.fmean(values))
    head_size = 16 // 4
    expected = {"mha": 2 * 4 * head_size, "gqa": 2 * 2 * head_size, "mqa": 2 * head_size}
    expected["mla"] = 4 * head_size + head_size // 2
    expected["mla_quarter"] = expected["mha"] // 4
    for name, size in expected.items():
        assert report["results"][name]["cache_per_token_and_layer"] == size
        assert report["results"][name]["cached_tokens_per_s"] > 0
    curves = results["extrapolation"]
    assert set(curves) == {"rope", "rope_linear", "rope_ntk", "rope_yarn", "alibi", "rope_log_n"}
    # at the training length the scalings are the identity (s = 1)
    for scaling in ("linear", "ntk", "yarn"):
        assert curves[f"rope_{scaling}"]["16"] == curves["rope"]["16"]
    assert (tmp_path / "extrapolation.png").stat().st_size > 0
