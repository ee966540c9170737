"""Shared test plumbing: the repository's ``examples`` and ``benchmarks`` folders importable, and a
``device`` fixture over the devices present (CUDA skipped with its reason when absent)."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() False)"
        ),
    ),
]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each device present: ``cpu`` always, ``cuda`` when ``torch.cuda.is_available()``."""
    return torch.device(request.param)
