"""The Python half of ``scripts/gpu_check.sh``: the host-synchronisation check and the report.

``python scripts/gpu_check.py sync --device cuda --json PATH``
    Runs a forward of each main layer and model (``validate=False`` where a module has it) once to
    warm up, then again under ``torch.cuda.set_sync_debug_mode("error")``, where any operation
    that makes the host wait for the GPU (``.item()``, ``bool(tensor)``, ``.cpu()``, ``nonzero``,
    linear algebra that checks its ``info`` on the host) raises. A case passes when the checked
    forward raises nothing and its outputs stay on the device. Cases marked ``expected`` read the
    device by design (the Karcher mean's per-set stopping rule) and are reported, not failed. With
    ``--device cpu`` the same forwards run without the check (a smoke test of the cases).
    Exit status 1 when a case fails.

``python scripts/gpu_check.py report --out DIR``
    Collects what the parts wrote under DIR (``parts.tsv``, ``tests.xml``, ``bench_*.json``,
    ``sync.json``) into ``DIR/gpu_check.json`` and the markdown tables of ``DIR/gpu_check.md``.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import math
import platform
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path

import torch

# the benchmarks import their shared helpers as benchmark_common / example_common, as when run as
# scripts; the repository root makes them importable as benchmarks.x
ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT / "examples", ROOT / "benchmarks", ROOT):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


# --------------------------------------------------------------------------- the sync check


def build(cls: type, *args, **kwargs):
    """``cls(*args, **kwargs)``, with ``validate=False`` where the constructor takes it."""
    if "validate" in inspect.signature(cls).parameters:
        kwargs["validate"] = False
    return cls(*args, **kwargs)


def first(output):
    """The output tensor of a module that returns a tensor, a tuple or a named tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    tensors = [v for v in getattr(output, "__dict__", {}).values() if isinstance(v, torch.Tensor)]
    if tensors:
        return tensors[0]
    raise TypeError(f"no tensor in the output {type(output).__name__}")


def sync_cases(device: torch.device) -> dict[str, tuple[Callable[[], object], bool]]:
    """``{name: (forward, expected_to_sync)}``; each forward builds nothing and returns outputs."""
    from torch import nn

    from benchmarks.tokens_per_second import make_config
    from manifoldnn.layers import (
        FavorAttention,
        FRMap,
        GeodesicAttention,
        ManifoldLinear,
        OrthMap,
        OrthogonalDirectSum,
        ProjMap,
        ProjPooling,
        ReOrth,
    )
    from manifoldnn.losses import ProjectionMetricContrastiveLoss
    from manifoldnn.manifolds import Grassmann, Sphere, karcher_mean
    from manifoldnn.models import BDH, GPT, BDHConfig, FusedStreamLM, GPTConfig, GrNet

    generator = torch.Generator().manual_seed(0)

    def frames(*shape: int) -> torch.Tensor:
        return torch.linalg.qr(torch.randn(*shape, generator=generator))[0].to(device)

    def unit(*shape: int) -> torch.Tensor:
        x = torch.randn(*shape, generator=generator)
        return (x / x.norm(dim=-1, keepdim=True)).to(device)

    def tokens(high: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=generator).to(device)

    cases: dict[str, tuple[Callable[[], object], bool]] = {}

    def case(name: str, make: Callable[[], nn.Module], *inputs, expected: bool = False) -> None:
        """Build the module now; a constructor that fails is a case whose forward re-raises."""
        try:
            module = make().to(device).eval()
        except Exception as error:  # noqa: BLE001  (a renamed argument: report, go on)
            cases[name] = (lambda error=error: _raise(error), expected)
            return
        cases[name] = (lambda: module(*inputs), expected)

    case(
        "FRMap-ReOrth-ProjMap-ProjPooling-OrthMap",
        lambda: nn.Sequential(
            FRMap(12, 8, 3), build(ReOrth), ProjMap(), ProjPooling("across"), OrthMap(2)
        ),
        frames(4, 1, 12, 2),
    )
    case(
        "GrNet",
        lambda: GrNet(8, 2, 3, dims=(6, 4), channels=4, pool_size=2),
        torch.randn(5, 8, 7).to(device),
    )
    case(
        "GeodesicAttention Grassmann",
        lambda: build(GeodesicAttention, Grassmann(), 6, 4, 2),
        frames(3, 5, 6, 2),
    )
    case(
        "GeodesicAttention Sphere",
        lambda: build(GeodesicAttention, Sphere(), 8, 8, 2),
        unit(2, 16, 8),
    )
    case(
        "FavorAttention Sphere",
        lambda: build(FavorAttention, Sphere(), 8, 8, 2, distance="chordal", num_features=16),
        unit(2, 16, 8),
    )
    case("ManifoldLinear Grassmann", lambda: ManifoldLinear(Grassmann(), 6, 4, 2), frames(3, 6, 2))
    case(
        "OrthogonalDirectSum",
        lambda: build(OrthogonalDirectSum, 4, 2, 3, 10),
        torch.randn(6, 4).to(device),
        torch.randn(6, 2, 3).to(device),
    )
    case(
        "ProjectionMetricContrastiveLoss",
        lambda: build(ProjectionMetricContrastiveLoss, 0.5),
        frames(3, 6, 5, 2),
    )
    case("FusedStreamLM", lambda: FusedStreamLM(5, 2, 4, 64), tokens(5, 2, 7), tokens(4, 2, 7, 2))
    sizes = dict(num_layers=2, dim=32, num_heads=2, chunk_size=8)
    prompt = tokens(256, 2, 20)
    models = {
        "BDH": lambda: BDH(make_config(BDHConfig, num_neurons=32, dropout=0.0, **sizes)),
        "GPT": lambda: GPT(make_config(GPTConfig, **sizes)),
    }
    for name, make in models.items():
        case(f"{name} forward", make, prompt)
        # generate reads the prompt (chunked prefill), then samples two tokens step by step
        case(f"{name} generate", lambda make=make: _Generate(make()), prompt)
    points = frames(4, 10, 6, 2)
    # the per-set stopping rule reads the gradient norms on the host: expected to synchronise
    cases["karcher_mean Grassmann"] = (lambda: karcher_mean(Grassmann(), points), True)
    return cases


def _raise(error: Exception):
    raise error


class _Generate(torch.nn.Module):
    """``model.generate(prompt, 2)`` as a module."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        return self.model.generate(prompt, 2)


def run_sync_check(device: torch.device) -> dict[str, dict]:
    cuda = device.type == "cuda"
    results: dict[str, dict] = {}
    try:
        cases = sync_cases(device)
    except Exception as error:  # a renamed API: report it as one failed case
        return {"imports": {"status": "error", "message": repr(error)[:300], "failed": True}}
    for name, (forward, expected) in cases.items():
        row: dict[str, object] = {"expected_sync": expected}
        try:
            with torch.no_grad():
                forward()  # warm-up: lazy initialisation (cuBLAS handles, ...) may synchronise
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.set_sync_debug_mode("error")
                try:
                    output = first(forward())
                finally:
                    if cuda:
                        torch.cuda.set_sync_debug_mode(0)
            if output.device.type != device.type:
                row.update(status="error", message=f"output on {output.device}, not {device}")
            elif cuda:
                torch.cuda.synchronize()
                row.update(status="ok")
            else:
                row.update(status="ran", message="cpu: forward only, no synchronisation check")
        except RuntimeError as error:
            message = str(error).splitlines()[0][:300]
            synced = "synchroniz" in message.lower()
            row.update(status="sync" if synced else "error", message=message)
        except Exception as error:
            row.update(status="error", message=repr(error)[:300])
        row["failed"] = row["status"] == "error" or (row["status"] == "sync" and not expected)
        results[name] = row
    return results


# --------------------------------------------------------------------------- the report


def read_tests(path: Path) -> dict[str, object]:
    """Counts and failed test ids from a pytest JUnit XML file."""
    if not path.is_file():
        return {"note": f"{path.name} not written"}
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed = []
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname')}::{case.get('name')}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts | {"failed": failed}


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Nested dicts to ``{"a/b": scalar}``; lists and strings longer than a line are left out."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            out |= flatten(item, f"{prefix}/{key}" if prefix else str(key))
        return out
    if isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) < 80):
        return {prefix: value}
    return {}


def cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def table(rows: dict[str, dict[str, object]]) -> list[str]:
    """A markdown table with one row per key of ``rows`` and one column per metric."""
    columns: list[str] = []
    for row in rows.values():
        columns += [c for c in row if c not in columns]
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(row.get(c, "")) for c in columns) + " |")
    return lines


def benchmark_rows(results: dict) -> dict[str, dict[str, object]]:
    """``{row: {metric: value}}`` from a benchmark's ``results``: its first level are the rows."""
    rows = {}
    for name, value in results.items():
        flat = flatten(value)
        if flat:
            rows[str(name)] = flat if isinstance(value, dict) else {"value": value}
    return rows


def read_parts(path: Path) -> dict[str, dict[str, object]]:
    parts = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            name, status, seconds, limit = line.split("\t")
            parts[name] = {"status": status, "seconds": float(seconds), "limit_s": int(limit)}
    return parts


def write_report(out: Path) -> dict:
    device_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.machine()
    environment = (
        json.loads((out / "environment.json").read_text())
        if (out / "environment.json").is_file()
        else {}
    )
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": environment.get("device", "?"),
        "device_name": device_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "parts": read_parts(out / "parts.tsv"),
        "tests": read_tests(out / "tests.xml"),
        "benchmarks": {},
        "sync": {},
    }
    for path in sorted(out.glob("bench_*.json")):
        report["benchmarks"][path.stem.removeprefix("bench_")] = json.loads(path.read_text()).get(
            "results", {}
        )
    if (out / "sync.json").is_file():
        report["sync"] = json.loads((out / "sync.json").read_text())["results"]
    report["results"] = {
        name: {"status": part["status"], "seconds": part["seconds"]}
        for name, part in report["parts"].items()
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))

    lines = [
        f"# GPU check, {report['date']}",
        "",
        f"Device `{report['device']}` ({device_name}), torch {report['torch']}, "
        f"CUDA {report['cuda']}. Command: `bash scripts/gpu_check.sh --device "
        f"{report['device']} --out {out}`.",
        "",
        "## Parts",
        "",
        *table(report["parts"]),
        "",
        "## Tests",
        "",
    ]
    tests = report["tests"]
    lines += [
        ", ".join(f"{k} {tests[k]}" for k in ("passed", "failures", "errors", "skipped"))
        if "passed" in tests
        else tests.get("note", ""),
        "",
    ]
    lines += [f"- failed: `{test}`" for test in tests.get("failed", [])]
    for name, results in report["benchmarks"].items():
        rows = benchmark_rows(results)
        if rows:
            lines += ["", f"## Benchmark: {name}", "", *table(rows)]
    if report["sync"]:
        rows = {
            name: {k: row.get(k, "") for k in ("status", "expected_sync", "failed", "message")}
            for name, row in report["sync"].items()
        }
        lines += ["", "## Host synchronisation in forwards", "", *table(rows)]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("sync", help="the host-synchronisation check")
    sync.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    sync.add_argument("--json", type=Path, required=True)
    report = commands.add_parser("report", help="collect the parts into JSON and markdown")
    report.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "report":
        write_report(args.out)
        return 0
    results = run_sync_check(torch.device(args.device))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"results": results}, indent=2))
    for name, row in results.items():
        print(f"{row['status']:>5}  {name}  {row.get('message', '')}")
    return 1 if any(row["failed"] for row in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
