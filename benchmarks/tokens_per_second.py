"""Training and decoding tokens per second of the sequence models BDH and GPT, on one device.

For each model, on random byte sequences (the figures do not depend on the data):

- ``train_tokens_per_s``: ``--batch`` x ``--context`` tokens per AdamW step (forward in the model's
  default ``chunked`` mode, cross-entropy, backward, step), the best of ``--repeats`` rounds of
  ``--steps`` steps after one warm-up step;
- ``prefill_s``: ``generate(prompt, 0)`` on a ``--batch`` x ``--gen-context`` prompt (the prompt
  read in chunks, the state or key/value cache built);
- ``decode_tokens_per_s``: ``--batch`` x ``--gen-tokens`` new tokens over the time of
  ``generate(prompt, gen_tokens)`` minus that of ``generate(prompt, 0)`` (the sampling loop: one
  recurrent step per token, BDH with its fixed-size state, GPT with its key/value cache).

Wall-clock seconds, synchronised on CUDA. The sizes default to small models that run in seconds
on a CPU; ``scripts/gpu_check.sh`` passes larger ones on a GPU.

    python benchmarks/tokens_per_second.py --device cuda --json out/tokens_per_second.json
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F
from benchmark_common import add_benchmark_arguments, add_options, synchronize, write_json

from manifoldnn.models import BDH, GPT, BDHConfig, GPTConfig

MODELS = ("bdh", "gpt")
# each model's size options (--bdh-layers, ...) with their defaults, and the configuration field
# each sets, by meaning
MODEL_SIZES = {
    "bdh": {"layers": 2, "dim": 32, "heads": 2, "neurons": (64, "neurons per head")},
    "gpt": {"layers": 2, "dim": 32, "heads": 2},
}
MEANINGS = {"layers": "num_layers", "dim": "dim", "heads": "num_heads", "neurons": "num_neurons"}
# configuration fields by meaning; the first name a config class has is used (the size vocabulary
# of the package docstring, or the names these configs had before it)
FIELDS = {
    "num_layers": ("num_layers", "n_layer"),
    "dim": ("dim", "n_embd"),
    "num_heads": ("num_heads", "n_head"),
    "num_neurons": ("num_neurons", "neurons_per_head", "n_neuron"),
    "chunk_size": ("chunk_size",),
    "dropout": ("dropout",),
}


def make_config(config_class: type, **sizes: object) -> object:
    """``config_class`` with the given sizes, named by meaning (keys of :data:`FIELDS`)."""
    names = {field.name for field in dataclasses.fields(config_class)}
    kwargs = {}
    for meaning, value in sizes.items():
        name = next((n for n in FIELDS[meaning] if n in names), None)
        if name is None:
            raise ValueError(f"{config_class.__name__} has none of the fields {FIELDS[meaning]}")
        kwargs[name] = value
    return config_class(**kwargs)


def build(name: str, args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    sizes = {MEANINGS[size]: getattr(args, f"{name}_{size}") for size in MODEL_SIZES[name]}
    if name == "bdh":
        return BDH(
            make_config(BDHConfig, chunk_size=args.chunk_size, dropout=0.0, **sizes), device=device
        )
    return GPT(make_config(GPTConfig, chunk_size=args.chunk_size, **sizes), device=device)


def timed(function) -> float:
    """Wall-clock seconds of one call, synchronised on CUDA."""
    synchronize()
    start = time.perf_counter()
    function()
    synchronize()
    return time.perf_counter() - start


def measure(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    generator = torch.Generator().manual_seed(args.seed)
    model = build(name, args, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 256, (args.batch, args.context + 1), generator=generator)
    tokens = tokens.to(device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def train_steps(steps: int) -> None:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            logits = model(inputs)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            loss.backward()
            optimizer.step()

    model.train()
    train_steps(1)  # warm-up: allocations, optimiser state, kernels
    train = min(timed(lambda: train_steps(args.steps)) for _ in range(args.repeats))

    model.eval()
    prompt = torch.randint(0, 256, (args.batch, args.gen_context), generator=generator).to(device)
    sampler = torch.Generator(device=device).manual_seed(args.seed)

    def generate(new_tokens: int) -> None:
        model.generate(prompt, new_tokens, generator=sampler)

    generate(2)  # warm-up
    prefill = min(timed(lambda: generate(0)) for _ in range(args.repeats))
    whole = min(timed(lambda: generate(args.gen_tokens)) for _ in range(args.repeats))
    decode = max(whole - prefill, 1e-9)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_tokens_per_s": args.batch * args.context * args.steps / train,
        "prefill_s": prefill,
        "decode_tokens_per_s": args.batch * args.gen_tokens / decode,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    options = {
        "batch": 2,
        "context": (64, "training sequence length"),
        "steps": (2, "training steps per timed round"),
        "gen_context": (64, "prompt length"),
        "gen_tokens": (8, "new tokens"),
        "chunk_size": 32,
    }
    for model, sizes in MODEL_SIZES.items():
        options |= {f"{model}_{size}": default for size, default in sizes.items()}
    add_options(parser, options)
    add_benchmark_arguments(parser, repeats=2, device=True)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    results = {name: measure(name, args, device) for name in args.models}
    print(
        f"batch {args.batch}, training context {args.context}, prompt {args.gen_context}, "
        f"{args.gen_tokens} new tokens, {args.device}"
    )
    print(f"{'model':<6}{'params':>12}{'train tok/s':>14}{'prefill s':>11}{'decode tok/s':>14}")
    for name, row in results.items():
        print(
            f"{name:<6}{row['parameters']:>12,}{row['train_tokens_per_s']:>14,.0f}"
            f"{row['prefill_s']:>11.3f}{row['decode_tokens_per_s']:>14,.0f}"
        )
    report = {"results": results, "config": vars(args)}
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
