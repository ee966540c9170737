"""FusedStreamLM (direct sum / summed / concat + linear) and the residual vector quantiser."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

from manifoldnn.models import FUSIONS, FusedStreamLM, ResidualVectorQuantizer

DTYPES = [torch.float32, torch.float64]
P, K, N, n, V = 11, 3, 9, 4, 4  # phonemes, codebooks, codes per codebook, text / code widths
C_EXACT = n + K * V


def make(
    fusion: str, c: int = C_EXACT, dtype=torch.float64, device="cpu", **kwargs
) -> FusedStreamLM:
    """Initialised on the CPU (the same weights on every device), then moved to ``device``."""
    torch.manual_seed(0)
    return FusedStreamLM(
        P, K, N, c, fusion=fusion, text_size=n, code_size=V, num_layers=2, num_heads=2, dtype=dtype,
        **kwargs,
    ).to(device)  # fmt: skip


def batch(b: int = 3, t: int = 10, seed: int = 0, device="cpu"):
    """Drawn on the CPU (the same ids on every device), then moved to ``device``."""
    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(0, P, (b, t), generator=generator)
    codes = torch.randint(0, N, (b, t, K), generator=generator)
    return text.to(device), codes.to(device)


CONFIGS = [
    ("direct_sum", C_EXACT, {}),
    ("direct_sum", 12, {"rank_a": 4, "rank_b": 6}),
    ("summed", C_EXACT, {}),
    ("concat_linear", C_EXACT, {}),
    ("summed", C_EXACT, {"position": "alibi", "num_kv_heads": 1}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("fusion", "c", "kwargs"), CONFIGS)
def test_shapes_and_dtype(fusion, c, kwargs, dtype, device) -> None:
    model = make(fusion, c, dtype, device, **kwargs)
    text, codes = batch(device=device)
    logits, hidden = model(text, codes, return_hidden=True)
    assert logits.shape == (3, 10, K, N) and logits.dtype == dtype
    assert logits.device.type == device.type
    assert hidden.shape == (3, 10, c)
    assert model.fuse(text, codes).shape == (3, 10, c)
    loss = model.loss(text, codes)
    assert loss.shape == (K,) and torch.isfinite(loss).all()


@pytest.mark.parametrize(("fusion", "c", "kwargs"), CONFIGS)
def test_causal_next_frame_prediction(fusion, c, kwargs, device) -> None:
    """Logits at frame t see text up to t and codes up to t - 1 only."""
    model = make(fusion, c, device=device, **kwargs)
    text, codes = batch(device=device)
    t = 5
    logits = model(text, codes)
    text2, codes2 = text.clone(), codes.clone()
    text2[:, t + 1 :] = (text2[:, t + 1 :] + 1) % P
    codes2[:, t:] = (codes2[:, t:] + 1) % N
    logits2 = model(text2, codes2)
    eps = torch.finfo(torch.float64).eps
    torch.testing.assert_close(logits2[:, : t + 1], logits[:, : t + 1], atol=1e3 * eps, rtol=0)
    assert (logits2[:, t + 1] - logits[:, t + 1]).abs().max() > 1e-6  # frame t+1 reads b_t


@pytest.mark.parametrize(("fusion", "c", "kwargs"), CONFIGS)
def test_masked_loss_equals_loss_of_the_prefix(fusion, c, kwargs, device) -> None:
    model = make(fusion, c, device=device, **kwargs)
    text, codes = batch(b=1, t=12, device=device)
    mask = torch.zeros(1, 12, dtype=torch.bool, device=device)
    mask[:, :7] = True
    eps = torch.finfo(torch.float64).eps
    torch.testing.assert_close(
        model.loss(text, codes, mask), model.loss(text[:, :7], codes[:, :7]), atol=1e3 * eps, rtol=0
    )


def test_summed_and_concat_inputs_are_what_they_say(device) -> None:
    text, codes = batch(device=device)
    summed = make("summed", device=device)
    prev = summed.previous_codes(codes)
    expected = summed.text_embedding(text)
    for k in range(K):
        expected = expected + summed.code_embeddings[k][prev[..., k]]
    torch.testing.assert_close(summed.fuse(text, codes), expected)
    concat = make("concat_linear", device=device)
    prev = concat.previous_codes(codes)
    parts = [concat.text_embedding(text)] + [
        concat.code_embeddings[k][prev[..., k]] for k in range(K)
    ]
    torch.testing.assert_close(concat.fuse(text, codes), concat.concat_map(torch.cat(parts, -1)))


def test_previous_codes_start_with_the_start_code(device) -> None:
    model = make("summed", device=device)
    _, codes = batch(device=device)
    prev = model.previous_codes(codes)
    assert torch.all(prev[:, 0] == N)
    torch.testing.assert_close(prev[:, 1:], codes[:, :-1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_direct_sum_input_decomposes_exactly(dtype, device) -> None:
    model = make("direct_sum", dtype=dtype, device=device)
    text, codes = batch(b=4, t=30, seed=1, device=device)
    x = model.fuse(text, codes)
    parts = model.decompose_input(x)
    assert torch.equal(parts["text"], text)
    assert torch.equal(parts["previous_codes"], model.previous_codes(codes))
    with torch.no_grad():
        a, b = model.features(text, codes)
    # two products with an orthonormal frame: a few eps of the features' size
    tol = 20 * torch.finfo(dtype).eps * max(float(a.abs().max()), float(b.abs().max()))
    torch.testing.assert_close(parts["a_hat"], a, atol=tol, rtol=0)
    torch.testing.assert_close(parts["b_hat"], b, atol=tol, rtol=0)


def test_lossy_direct_sum_cca_and_pca_start(device) -> None:
    text, codes = batch(b=20, t=30, seed=2, device=device)
    for method in ("pca", "cca"):
        model = make("direct_sum", 12, device=device, rank_a=4, rank_b=6)
        model.initialize_fusion(text, codes, method)
        q_a, q_b, _, _ = model.direct_sum.frames()
        eps = torch.finfo(torch.float64).eps
        assert float((q_a.T @ q_b).detach().abs().max()) <= 100 * eps
        assert torch.isfinite(model.loss(text, codes)).all()
    with pytest.raises(ValueError, match="direct_sum"):
        make("summed", device=device).initialize_fusion(text, codes)


@pytest.mark.parametrize(("fusion", "c", "kwargs"), CONFIGS)
def test_gradcheck(fusion, c, kwargs, device) -> None:
    model = make(fusion, c, device=device, **kwargs)
    text, codes = batch(b=2, t=4, device=device)
    weight = model.text_embedding.weight.detach().clone().requires_grad_(True)

    def f(w):
        return functional_call(model, {"text_embedding.weight": w}, (text, codes))

    assert torch.autograd.gradcheck(f, (weight,), eps=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
@pytest.mark.parametrize(("fusion", "c", "kwargs"), CONFIGS)
def test_cuda_matches_cpu(fusion, c, kwargs) -> None:
    model = make(fusion, c, **kwargs)
    text, codes = batch()
    expected = model(text, codes)
    got = model.to("cuda")(text.cuda(), codes.cuda())
    torch.testing.assert_close(got.cpu(), expected, atol=1e-10, rtol=1e-10)


def test_value_errors() -> None:
    with pytest.raises(ValueError, match="fusion"):
        FusedStreamLM(P, K, N, 16, fusion="sum")
    with pytest.raises(ValueError, match="rank_a"):
        FusedStreamLM(P, K, N, 16, fusion="summed", rank_a=2)
    with pytest.raises(ValueError, match="exact mode"):
        FusedStreamLM(P, K, N, 12, fusion="direct_sum", text_size=n, code_size=V)
    with pytest.raises(ValueError, match="position"):
        FusedStreamLM(P, K, N, 16, fusion="summed", position="absolute")
    with pytest.raises(ValueError, match="num_kv_heads"):
        FusedStreamLM(P, K, N, 16, fusion="summed", num_heads=4, num_kv_heads=3)
    model = make("summed")
    text, codes = batch()
    with pytest.raises(ValueError, match=r"codes must have shape \(B, T, K\)"):
        model(text, codes[..., :2])
    with pytest.raises(ValueError, match="text must be integer"):
        model(text.double(), codes)
    assert set(FUSIONS) == {"direct_sum", "summed", "concat_linear"}


# ---------------------------------------------------------------- residual vector quantiser
def test_rvq_recovers_planted_codebook_exactly(device) -> None:
    """fit is NumPy (scikit-learn k-means); encode / decode run on ``device``."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 3)) * 10
    x = centres[rng.integers(0, 6, 300)]
    rvq = ResidualVectorQuantizer(1, 6, random_state=0).fit(x)
    decoded = rvq.decode(rvq.encode(torch.from_numpy(x).to(device)))
    assert decoded.device.type == device.type
    np.testing.assert_allclose(decoded.cpu().numpy(), x, atol=1e-9)


def test_rvq_encode_is_the_greedy_nearest_code_and_errors_decrease(device) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 5))
    rvq = ResidualVectorQuantizer(3, 8, random_state=0).fit(x)
    frames = torch.from_numpy(x).to(device)
    ids = rvq.encode(frames).cpu().numpy()
    residual = x.copy()
    errors = [float((x**2).sum())]
    for k, book in enumerate(rvq.codebooks_.numpy()):  # brute-force greedy reference
        nearest = ((residual[:, None, :] - book[None]) ** 2).sum(-1).argmin(1)
        np.testing.assert_array_equal(ids[:, k], nearest)
        residual = residual - book[nearest]
        errors.append(float((residual**2).sum()))
    assert all(later <= earlier for earlier, later in zip(errors, errors[1:]))
    decoded = rvq.decode(torch.from_numpy(ids).to(device)).cpu().numpy()
    np.testing.assert_allclose(decoded, x - residual, atol=1e-12)
    assert rvq.encode(frames.view(20, 20, 5)).shape == (20, 20, 3)


def test_rvq_value_errors() -> None:
    with pytest.raises(ValueError, match="not fitted"):
        ResidualVectorQuantizer(2, 4).encode(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="codebook_size"):
        ResidualVectorQuantizer(2, 40).fit(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="n_codebooks"):
        ResidualVectorQuantizer(0, 4)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_compiles_without_graph_breaks(fusion, device) -> None:
    """fullgraph=True fails on any graph break (no host reads of tensor values in forward)."""
    model = make(fusion, device=device)
    text, codes = batch(device=device)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(text, codes), model(text, codes))


def test_renamed_arguments_warn_and_still_work():
    with pytest.warns(FutureWarning, match="renamed"):
        model = FusedStreamLM(
            5, n_codebooks=2, num_codes=4, c=20, text_dim=4, code_dim=3, n_layer=1, n_head=2
        )
    assert (model.num_codebooks, model.dim, model.text_size, model.code_size) == (2, 20, 4, 3)
    assert len(model.blocks) == 1 and model.config.num_heads == 2
