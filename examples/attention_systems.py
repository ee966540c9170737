"""Cache-efficient attention and positions that extrapolate, on the byte language model.

The corpus and the training step are those of ``examples/byte_lm.py`` (``pydoc_data.topics`` as
UTF-8 bytes, 90% training, 10% validation; AdamW with warm-up and cosine decay). Every model of a
part trains on the same batches, the same number of tokens (``--tokens``, ``--linear-tokens``).
Three measurements, each repeated for ``--seeds`` seeds (means, with standard deviations as
``<metric>_std``):

- ``cache``: GPTs with multi-head (MHA), grouped-query (GQA, ``--groups`` key/value heads),
  multi-query (MQA) and multi-head latent attention (MLA, ``kv_rank = 4 d_h``,
  ``rope_dim = d_h / 2``; and ``mla_quarter``, ``kv_rank`` cut to a quarter of MHA's cache):
  the numbers cached per token and layer, validation bits per byte, and
  decoding tokens/s after a ``--decode-context`` prompt, with the cache (``GPT.step``) against
  recomputing the whole prefix for every new token (one forward each);
- ``extrapolation``: GPTs trained at ``--context`` tokens with RoPE, ALiBi and RoPE with the
  entropy-invariant ``log n`` scaling, evaluated at ``--eval-lengths``; the RoPE model is also
  evaluated with position interpolation, NTK-aware and YaRN scaling at ``s = L' / L`` (applied at
  evaluation only, no fine-tuning);
- ``linear``: linear-time approximations of softmax attention against softmax (SDPA, with RoPE
  and, as ``softmax_nope``, without positions like the approximations): GPTs with
  Transformer-VQ (``--codebook`` codewords a head; ``vq_rope`` with rotary positions over the
  last ``--linear-chunk`` keys), FAVOR+, FAVOR++ (``--features`` random
  features a head), ReLU² (GAU) and the delta rule, and BDH with as many parameters (its neurons
  per head chosen to match), trained on the same ``--linear-tokens`` tokens in steps of
  ``--step-tokens`` tokens at each of ``--linear-lengths`` (the batch is ``step_tokens / L``
  windows): validation bits per byte at the training length and training tokens/s. The
  estimators' relative error against exact softmax over temperatures is
  ``benchmarks/softmax_approximations.py``.

    python examples/attention_systems.py --seed 0 --out out/attention_systems \\
        --json out/attention_systems.json

One thread by default (``--threads``); speeds are CPU seconds of this process. It writes
``extrapolation.png`` (bits per byte against the evaluation length). Measured figures are in
``docs/results/attention_systems.md``.
"""

from __future__ import annotations

import time

import torch
from byte_lm import (
    bits_per_byte,
    load_corpus,
    sample_batch,
    set_learning_rate,
    split_corpus,
    train_step,
    training_options,
    windows,
)
from example_common import example_parser, mean_over_seeds, save_figure, write_report
from tqdm import tqdm

from manifoldnn.models import BDH, GPT, BDHConfig, GPTConfig


def cache_configs(args) -> dict[str, GPTConfig]:
    """MHA, GQA, MQA, MLA with DeepSeek-V2's ratios (``d_c = 4 d_h``, ``d_h^R = d_h / 2``) and
    ``mla_quarter``: MLA with ``d_c`` cut so that its cache is a quarter of MHA's
    (``d_c + d_h^R = n_h d_h / 2``; left out where that leaves no latent)."""
    sizes = {"num_layers": args.layers, "dim": args.dim, "num_heads": args.heads}
    head_size = args.dim // args.heads
    rope_dim = head_size // 2
    configs = {
        "mha": GPTConfig(**sizes),
        "gqa": GPTConfig(**sizes, num_kv_heads=args.groups),
        "mqa": GPTConfig(**sizes, num_kv_heads=1),
        "mla": GPTConfig(**sizes, attention="latent", kv_rank=4 * head_size, rope_dim=rope_dim),
    }
    quarter_rank = args.heads * head_size // 2 - rope_dim
    if quarter_rank > 0:
        configs["mla_quarter"] = GPTConfig(
            **sizes, attention="latent", kv_rank=quarter_rank, rope_dim=rope_dim
        )
    if args.cache_models is not None:
        configs = {name: configs[name] for name in args.cache_models if name in configs}
    return configs


def linear_models(args) -> dict[str, torch.nn.Module]:
    """Softmax (SDPA, with RoPE and without positions), the linear-time approximations, the delta
    rule and BDH at about the same parameter count (BDH's neurons per head solve its linear count
    for the GPT's)."""
    sizes = {"num_layers": args.layers, "dim": args.dim, "num_heads": args.heads}
    unpositioned = {"position": "none", "chunk_size": args.linear_chunk}
    configs = {
        "softmax": GPTConfig(**sizes),
        "vq": GPTConfig(**sizes, attention="vq", codebook_size=args.codebook, **unpositioned),
        "favor+": GPTConfig(**sizes, attention="favor", num_features=args.features, **unpositioned),
        "favor++": GPTConfig(
            **sizes, attention="favor++", num_features=args.features, **unpositioned
        ),
        "relu2": GPTConfig(**sizes, attention="relu2", position="none"),
        "delta": GPTConfig(**sizes, attention="delta", chunk_size=args.linear_chunk),
    }
    models = {name: GPT(config) for name, config in configs.items()}
    target = sum(p.numel() for p in models["softmax"].parameters())

    def bdh(neurons: int) -> BDH:
        return BDH(
            BDHConfig(
                num_layers=args.layers, dim=args.dim, num_heads=args.heads,
                num_neurons=neurons, dropout=0.0, chunk_size=args.linear_chunk,
            )
        )  # fmt: skip

    two, four = (sum(p.numel() for p in bdh(n).parameters()) for n in (2, 4))
    # the count is linear in the neurons per head, which RoPE wants even: steps of two
    models["bdh"] = bdh(2 + 2 * max(0, round((target - two) / (four - two))))
    # built last: the models above draw their initial weights as they did before it was added
    models["softmax_nope"] = GPT(GPTConfig(**sizes, position="none"))
    models["vq_rope"] = GPT(
        GPTConfig(
            **sizes, attention="vq", codebook_size=args.codebook, chunk_size=args.linear_chunk
        )
    )
    return models


def train_on_tokens(model, train_tokens, length: int, batch: int, tokens: int, args, seed: int,
                    label: str) -> dict:  # fmt: skip
    """Train on ``tokens`` tokens in steps of ``batch`` windows of ``length`` (the same batches for
    every model of a seed; 5% warm-up, then cosine decay); CPU seconds of the steps only."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    steps = max(1, tokens // (batch * length))
    seconds = 0.0
    model.train()
    for step in tqdm(range(steps), desc=label, leave=False):
        set_learning_rate(optimizer, args.lr, step / steps)
        windows_ = sample_batch(train_tokens, length, batch, generator)
        t0 = time.process_time()
        train_step(model, optimizer, windows_)
        seconds += time.process_time() - t0
    return {"tokens": steps * batch * length, "steps": steps, "seconds": seconds}


def decode_speed(model: GPT, prompt: torch.Tensor, new_tokens: int, recompute_tokens: int) -> dict:
    """Decoding tokens/s (CPU seconds of this process) with the cache and by recomputation."""
    model.eval()
    clock = time.process_time
    with torch.no_grad():
        t0 = clock()
        logits, cache = model.prefill(prompt, new_tokens)
        t1 = clock()
        for position in range(prompt.shape[1], prompt.shape[1] + new_tokens):
            logits, cache = model.step(logits.argmax(-1, keepdim=True), cache, position)
        t2 = clock()
        sequence = prompt
        for _ in range(recompute_tokens):
            token = model(sequence)[:, -1:].argmax(-1)
            sequence = torch.cat([sequence, token], 1)
        t3 = clock()
    cached, recomputed = new_tokens / (t2 - t1), recompute_tokens / (t3 - t2)
    return {
        "prefill_seconds": t1 - t0,
        "cached_tokens_per_s": cached,
        "recompute_tokens_per_s": recomputed,
        "speedup": cached / recomputed,
    }


def evaluate_lengths(model: GPT, val_tokens, args) -> dict[str, float]:
    return {
        str(length): bits_per_byte(model, windows(val_tokens, length, args.eval_bytes), 1)
        for length in args.eval_lengths
    }


def scaled(model: GPT, scaling: str, factor: float, train_length: int) -> GPT:
    """The trained RoPE model with its rotary frequencies scaled by ``factor`` (no training)."""
    config = GPTConfig(
        **{
            name: getattr(model.config, name)
            for name in ("vocab_size", "num_layers", "dim", "num_heads", "mlp_ratio")
        },
        rope_scaling=scaling if factor > 1 else None,
        rope_factor=factor,
        train_length=train_length,
    )
    copy = GPT(config)
    copy.load_state_dict(model.state_dict())
    return copy


def cache_part(args, seed: int, train_tokens, val_tokens, eval_windows) -> dict:
    results = {}
    prompt = val_tokens[: args.decode_context].unsqueeze(0)
    for name, config in cache_configs(args).items():
        torch.manual_seed(seed)
        model = GPT(config)
        history = train_on_tokens(
            model, train_tokens, args.context, args.batch, args.tokens, args, seed, name
        )
        row = {
            "params": sum(p.numel() for p in model.parameters()),
            "cache_per_token_and_layer": model.blocks[0].attention.cache_size_per_token,
            "val_bpb": bits_per_byte(model, eval_windows, args.batch),
            "train_tokens": history["tokens"],
            "train_tokens_per_s": history["tokens"] / history["seconds"],
        }
        row.update(decode_speed(model, prompt, args.decode_tokens, args.recompute_tokens))
        results[name] = row
        print(
            f"seed {seed} {name:<4} params {row['params']:>8,}  cache/token/layer "
            f"{row['cache_per_token_and_layer']:>4}  val bpb {row['val_bpb']:.3f}  decode "
            f"{row['cached_tokens_per_s']:.1f} tok/s cached, "
            f"{row['recompute_tokens_per_s']:.2f} recomputed ({row['speedup']:.0f}x) at "
            f"{args.decode_context}"
        )
    return results


def extrapolation_part(args, seed: int, train_tokens, val_tokens) -> dict:
    trained = {
        "rope": {},
        "alibi": {"position": "alibi"},
        "rope_log_n": {"log_length_scaling": True, "train_length": args.context},
    }
    curves = {}
    for name, options in trained.items():
        config = GPTConfig(num_layers=args.layers, dim=args.dim, num_heads=args.heads, **options)
        torch.manual_seed(seed)
        model = GPT(config)
        train_on_tokens(
            model, train_tokens, args.context, args.batch, args.tokens, args, seed, name
        )
        curves[name] = evaluate_lengths(model, val_tokens, args)
        if name == "rope":
            for scaling in ("linear", "ntk", "yarn"):
                curves[f"rope_{scaling}"] = {
                    str(length): bits_per_byte(
                        scaled(model, scaling, max(1.0, length / args.context), args.context),
                        windows(val_tokens, length, args.eval_bytes),
                        1,
                    )
                    for length in args.eval_lengths
                }
    print(f"seed {seed}  {'position':<12}" + "".join(f"{n:>9}" for n in args.eval_lengths))
    for name, curve in curves.items():
        print(
            f"seed {seed}  {name:<12}"
            + "".join(f"{curve[str(n)]:>9.3f}" for n in args.eval_lengths)
        )
    return curves


def linear_part(args, seed: int, train_tokens, val_tokens) -> dict:
    table = {}
    for length in args.linear_lengths:
        val = windows(val_tokens, length, max(args.eval_bytes, length + 1))
        torch.manual_seed(seed)
        for name, model in linear_models(args).items():
            if args.linear_models is not None and name not in args.linear_models:
                continue
            batch = max(1, args.step_tokens // length)
            history = train_on_tokens(
                model,
                train_tokens,
                length,
                batch,
                args.linear_tokens,
                args,
                seed,
                f"{name}@{length}",
            )
            row = {
                "params": sum(p.numel() for p in model.parameters()),
                "val_bpb": bits_per_byte(model, val, 1),
                "train_tokens": history["tokens"],
                "train_tokens_per_s": history["tokens"] / history["seconds"],
            }
            table.setdefault(name, {})[str(length)] = row
            print(
                f"seed {seed} {name:<8} L={length:<6} params {row['params']:>8,}  val bpb "
                f"{row['val_bpb']:.3f}  train {row['train_tokens_per_s']:,.0f} tok/s"
            )
    return table


def plot_extrapolation(curves: dict, args) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    lengths = args.eval_lengths
    for name, curve in curves.items():
        means = [curve[str(n)] for n in lengths]
        spread = [curve.get(f"{n}_std", 0.0) for n in lengths]
        ax.errorbar(lengths, means, yerr=spread, fmt="o-", capsize=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("evaluation length (bytes)")
    ax.set_ylabel("validation bits per byte")
    ax.legend()
    seeds = f", mean and std over {args.seeds} seeds" if args.seeds > 1 else ""
    save_figure(fig, args.out / "extrapolation.png", f"trained at {args.context} bytes{seeds}")


def main(argv: list[str] | None = None) -> dict:
    parser = example_parser(
        __doc__,
        "attention_systems",
        {
            **training_options(
                "threads",
                "context",
                "batch",
                "lr",
                "eval_bytes",
                context=(256, "training length L"),
                eval_bytes=(32768, "validation bytes per evaluation length"),
            ),  # fmt: skip
            "tokens": (786432, "training tokens per model of the cache and extrapolation parts"),
            "seeds": (1, "seeds, from --seed on"),
            "layers": 4,
            "dim": 128,
            "heads": 8,
            "groups": (4, "key/value heads of GQA"),
            "decode_context": (2048, "prompt length of the decoding measurement"),
            "decode_tokens": (32, "tokens decoded with the cache"),
            "recompute_tokens": (4, "tokens decoded by recomputing the prefix"),
        },
    )
    parser.add_argument("--eval-lengths", type=int, nargs="*", default=[256, 1024, 4096])
    parser.add_argument("--parts", nargs="*", default=["cache", "extrapolation"])
    parser.add_argument(
        "--cache-models", nargs="*", default=None, help="a subset of the cache part's models"
    )
    parser.add_argument("--linear-lengths", type=int, nargs="*", default=[1024, 4096])
    parser.add_argument("--linear-tokens", type=int, default=131072, help="training tokens")
    parser.add_argument("--step-tokens", type=int, default=4096, help="tokens per step")
    parser.add_argument("--linear-chunk", type=int, default=64, help="chunk/block length")
    parser.add_argument(
        "--linear-models", nargs="*", default=None, help="a subset of the linear part's models"
    )
    parser.add_argument("--codebook", type=int, default=64, help="Transformer-VQ codewords")
    parser.add_argument("--features", type=int, default=64, help="FAVOR random features")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    train_tokens, val_tokens = split_corpus(load_corpus())
    eval_windows = windows(val_tokens, args.context, args.eval_bytes)
    runs = []
    for seed in range(args.seed, args.seed + args.seeds):
        results = {}
        if "cache" in args.parts:
            results.update(cache_part(args, seed, train_tokens, val_tokens, eval_windows))
        if "extrapolation" in args.parts:
            results["extrapolation"] = extrapolation_part(args, seed, train_tokens, val_tokens)
        if "linear" in args.parts:
            results["linear"] = linear_part(args, seed, train_tokens, val_tokens)
        runs.append(results)
    results = mean_over_seeds(runs) if len(runs) > 1 else runs[0]
    if "extrapolation" in results:
        plot_extrapolation(results["extrapolation"], args)
    return write_report(args, results, start, per_seed=runs)


if __name__ == "__main__":
    main()
