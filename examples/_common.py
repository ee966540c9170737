"""Command-line plumbing shared by the examples: ``--seed``, ``--out``, ``--json`` and the JSON file.

Examples run as ``python examples/x.py`` (``sys.path[0]`` is ``examples/``) and are imported as
``examples.x`` by the tests, so each imports this module with a fallback::

    try:
        from examples._common import add_output_arguments, write_json
    except ModuleNotFoundError:  # run as a script: examples/ is sys.path[0]
        from _common import add_output_arguments, write_json
"""

from __future__ import annotations

import argparse
import json
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
