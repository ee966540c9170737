"""Command-line plumbing shared by the examples (and the benchmarks): ``--seed``, ``--out``,
``--json``, the JSON file, options from a table of defaults (``add_options``) and figures
(``save_figure``).

Examples run as ``python examples/x.py`` (``sys.path[0]`` is ``examples/``); the tests import them
as ``examples.x`` with ``examples/`` on ``sys.path`` too (``tests/conftest.py``), so every example
imports this module as ``from example_common import add_output_arguments, write_json``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def add_output_arguments(
    parser: argparse.ArgumentParser, name: str, seed_help: str = "random seed"
) -> argparse.ArgumentParser:
    """Add ``--seed`` (default 0), ``--out`` (default ``out/<name>``) and ``--json`` (default: none).

    ``--out`` and ``--json`` are parsed as :class:`pathlib.Path`; ``seed_help`` is the help text of
    ``--seed`` (default ``"random seed"``), for an example that reads the seed in its own way.
    """
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument(
        "--out", type=Path, default=Path("out") / name, help="directory for plots and checkpoints"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help='write {"results": {method: {metric: value}}} here'
    )
    return parser


def example_parser(
    doc: str | None,
    name: str,
    options: dict[str, object] | None = None,
    *,
    seed_help: str = "random seed",
) -> argparse.ArgumentParser:
    """The argument parser of an example: its docstring's first line as the description,
    :func:`add_output_arguments` (``--seed``, ``--out``, ``--json``) and the ``options`` table
    (:func:`add_options`)."""
    description = (doc or "").strip().splitlines()[0] if doc else None
    parser = add_output_arguments(argparse.ArgumentParser(description=description), name, seed_help)
    return add_options(parser, options or {})


def add_options(
    parser: argparse.ArgumentParser, options: dict[str, object]
) -> argparse.ArgumentParser:
    """Add one ``--name`` option per entry of ``options``, typed by its default.

    ``{"batch_size": 32, "lr": (3e-3, "learning rate")}`` adds ``--batch-size`` (int, default 32)
    and ``--lr`` (float, default 0.003, with its help text): a value is the default or a pair
    ``(default, help)``; underscores become dashes; the default must be an int, a float or a str.
    """
    for name, spec in options.items():
        default, help_text = spec if isinstance(spec, tuple) else (spec, None)
        if isinstance(default, bool) or not isinstance(default, int | float | str):
            raise TypeError(f"add_options: --{name} needs an int, float or str default")
        parser.add_argument(
            "--" + name.replace("_", "-"), type=type(default), default=default, help=help_text
        )
    return parser


def keyword_options(args: argparse.Namespace, estimator: Callable) -> dict[str, object]:
    """The parsed options named like a keyword-only parameter of ``estimator`` (a class or a
    function), to be passed as ``Estimator(size, ..., **keyword_options(args, Estimator))``.

    An example names its options after the estimator's parameters (``--burn-in`` for ``burn_in``),
    so each option is written once, in the table; options that differ in name or meaning (``--seed``
    for ``random_state``) are passed by hand.
    """
    parameters = inspect.signature(estimator).parameters.values()
    return {
        p.name: getattr(args, p.name)
        for p in parameters
        if p.kind is inspect.Parameter.KEYWORD_ONLY and hasattr(args, p.name)
    }


def save_figure(fig, path: str | Path, title: str | None = None) -> None:
    """Give ``fig`` its title, lay it out, write it to ``path`` (120 dpi) and close it."""
    import matplotlib.pyplot as plt

    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_json(path: str | Path | None, payload: dict) -> None:
    """Write ``payload`` (which must have a ``"results"`` mapping) as indented JSON to ``path``,
    creating its folder; ``path=None`` writes nothing."""
    if path is None:
        return
    if not isinstance(payload.get("results"), dict):
        raise ValueError('write_json needs a payload with a "results" dict')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))


def run_settings(args: argparse.Namespace) -> dict[str, object]:
    """The parsed options as the JSON report records them: paths (alone or in a list) as
    strings, so that the returned report equals the written one."""

    def plain(value: object) -> object:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, list | tuple):
            return [plain(item) for item in value]
        return value

    return {key: plain(value) for key, value in vars(args).items()}


def write_report(args: argparse.Namespace, results: dict, start: float, **extra: object) -> dict:
    """The report ``{"results": results, **extra, "config": run_settings(args), "seconds": ...}``
    (the seconds since ``start``, a ``time.perf_counter()`` reading), written to ``args.json``
    (nothing when it is ``None``) and returned."""
    report = {
        "results": results,
        **extra,
        "config": run_settings(args),
        "seconds": time.perf_counter() - start,
    }
    write_json(args.json, report)
    return report


def mean_over_seeds(runs: list[dict]) -> dict:
    """The results of several seeds as one: the mean of every number that differs between the
    runs, with its sample standard deviation beside it as ``"<key>_std"``; values equal in every
    run (sizes, counts) are kept as they are. The runs must have the same keys."""
    merged: dict = {}
    for key, first in runs[0].items():
        values = [run[key] for run in runs]
        if isinstance(first, dict):
            merged[key] = mean_over_seeds(values)
        elif all(value == first for value in values) or not isinstance(first, int | float):
            merged[key] = first
        else:
            merged[key] = statistics.fmean(values)
            merged[f"{key}_std"] = statistics.stdev(values)
    return merged
