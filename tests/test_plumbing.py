"""The plumbing shared by the examples (``examples/example_common.py``) and benchmarks
(``benchmarks/benchmark_common.py``)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import benchmark_common as benchmarks_common
import example_common as examples_common
import pytest
from benchmark_common import add_benchmark_arguments, best_time
from example_common import add_output_arguments


def test_output_arguments_defaults_and_paths():
    parser = add_output_arguments(argparse.ArgumentParser(), "demo")
    args = parser.parse_args([])
    assert (args.seed, args.out, args.json) == (0, Path("out/demo"), None)
    args = parser.parse_args(["--seed", "3", "--out", "a/b", "--json", "c/r.json"])
    assert (args.seed, args.out, args.json) == (3, Path("a/b"), Path("c/r.json"))


def test_output_arguments_seed_help():
    parser = add_output_arguments(argparse.ArgumentParser(), "demo", "first seed")
    assert "first seed" in parser.format_help()
    assert parser.parse_args([]).seed == 0


def test_benchmarks_share_the_examples_write_json():
    assert benchmarks_common.write_json is examples_common.write_json


def test_write_json_round_trip_and_validation(tmp_path):
    write_json = examples_common.write_json
    path = tmp_path / "nested" / "results.json"
    payload = {"results": {"method": {"accuracy": 0.5}}, "out": Path("x")}
    write_json(path, payload)
    assert json.loads(path.read_text()) == {"results": {"method": {"accuracy": 0.5}}, "out": "x"}
    write_json(None, payload)  # no --json: nothing written, no error
    with pytest.raises(ValueError, match="results"):
        write_json(tmp_path / "bad.json", {"cv": {}})
    assert not (tmp_path / "bad.json").exists()


def test_best_time_calls_and_validation():
    calls = []
    best_time(lambda: calls.append(1), repeats=3, inner=4)
    assert len(calls) == 1 + 3 * 4  # one warm-up call, then repeats x inner timed calls
    for repeats, inner in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match="repeats >= 1 and inner >= 1"):
            best_time(lambda: None, repeats, inner)


def test_benchmark_arguments_defaults():
    parser = add_benchmark_arguments(argparse.ArgumentParser(), repeats=3, device=True)
    args = parser.parse_args([])
    assert (args.seed, args.repeats, args.device, args.json) == (0, 3, "cpu", None)
    args = parser.parse_args(["--device", "cuda", "--json", "r.json", "--repeats", "1"])
    assert (args.device, args.json, args.repeats) == ("cuda", Path("r.json"), 1)
    bare = add_benchmark_arguments(argparse.ArgumentParser(), repeats=None).parse_args([])
    assert not hasattr(bare, "repeats") and not hasattr(bare, "device")


def test_add_options_types_defaults_and_help():
    parser = examples_common.add_options(
        argparse.ArgumentParser(), {"batch_size": 32, "lr": (3e-3, "learning rate"), "K": 4}
    )
    args = parser.parse_args([])
    assert (args.batch_size, args.lr, args.K) == (32, 3e-3, 4)
    args = parser.parse_args(["--batch-size", "8", "--lr", "0.5"])
    assert (args.batch_size, args.lr) == (8, 0.5) and isinstance(args.lr, float)
    assert "learning rate" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--batch-size", "1.5"])
    for bad in (True, None, [1]):
        with pytest.raises(TypeError, match="--x"):
            examples_common.add_options(argparse.ArgumentParser(), {"x": bad})


def test_save_figure_writes_and_closes(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    fig, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    examples_common.save_figure(fig, tmp_path / "f.png", "title")
    assert (tmp_path / "f.png").stat().st_size > 0
    assert fig._suptitle.get_text() == "title"
    assert not plt.fignum_exists(fig.number)


def test_example_parser_description_outputs_and_options():
    parser = examples_common.example_parser(
        "First line.\n\nMore text.", "demo", {"lr": (0.1, "learning rate")}, seed_help="the seed"
    )
    assert parser.description == "First line."
    args = parser.parse_args(["--lr", "0.5"])
    assert (args.seed, args.lr, args.json) == (0, 0.5, None)
    assert args.out == Path("out") / "demo"
    assert "the seed" in parser.format_help()


def test_write_report_records_settings_and_seconds(tmp_path):
    parser = examples_common.example_parser(None, "demo")
    args = parser.parse_args(["--json", str(tmp_path / "r.json"), "--out", str(tmp_path)])
    start = time.perf_counter()
    report = examples_common.write_report(args, {"m": {"acc": 1.0}}, start, extra=[1])
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["results"] == report["results"] == {"m": {"acc": 1.0}}
    assert saved["extra"] == [1] and saved["config"]["out"] == str(tmp_path)
    assert report["config"] == saved["config"]  # paths as strings in both
    assert 0 <= saved["seconds"] == report["seconds"]


def test_mean_over_seeds_means_differing_numbers_and_keeps_the_rest():
    runs = [
        {"a": {"bpb": 2.0, "params": 10, "name": "x"}, "curve": {"256": 1.0}},
        {"a": {"bpb": 4.0, "params": 10, "name": "x"}, "curve": {"256": 3.0}},
    ]
    merged = examples_common.mean_over_seeds(runs)
    assert merged == {
        "a": {"bpb": 3.0, "bpb_std": pytest.approx(2**0.5), "params": 10, "name": "x"},
        "curve": {"256": 2.0, "256_std": pytest.approx(2**0.5)},
    }
