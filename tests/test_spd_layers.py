"""SPD network layers: closed forms, Daleckii-Krein gradients at repeated eigenvalues, constraints
kept by Riemannian steps and dtype conversion, Riemannian batch normalisation, bad input, compile.

Tolerances. Matrices are ``n x n`` with ``n <= 6`` and eigenvalues in ``[e^-2, e^2]``: the spectral
functions are then exact to ``ROUNDING * n * eps`` relative to the largest output entry (an
eigendecomposition backward-stable to ``n eps``, a few products). Gradients are compared at the
same relative level, scaled by the largest divided difference.
"""

import math

import geoopt
import numpy as np
import pytest
import scipy.linalg
import torch

from manifoldnn.layers import BiMap, CovPool, ExpEig, LogEig, ReEig, SPDBatchNorm
from manifoldnn.manifolds import SymmetricPositiveDefinite, karcher_mean, spd_manifold

ROUNDING = 64
DTYPES = [torch.float32, torch.float64]


def _bound(dtype, n, scale=1.0):
    return ROUNDING * n * torch.finfo(dtype).eps * max(float(scale), 1.0)


def _spd(batch, n, seed, dtype=torch.float64, device="cpu", eigenvalues=None):
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(*batch, n, n, generator=generator, dtype=torch.float64))
    if eigenvalues is None:
        lam = (4 * torch.rand(*batch, n, generator=generator, dtype=torch.float64) - 2).exp()
    else:
        lam = torch.as_tensor(eigenvalues, dtype=torch.float64).expand(*batch, n)
    x = (q * lam.unsqueeze(-2)) @ q.transpose(-1, -2)
    return (0.5 * (x + x.transpose(-1, -2))).to(dtype=dtype, device=device)


def _sym(a):
    return 0.5 * (a + a.transpose(-1, -2))


# ------------------------------------------------------------------------------------ BiMap
@pytest.mark.parametrize("dtype", DTYPES)
def test_bimap_is_the_congruence_by_an_orthonormal_frame(dtype, device):
    layer = BiMap(6, 3, device=device, dtype=dtype)
    x = _spd((4,), 6, 0, dtype, device)
    w = layer.weight.detach()
    out = layer(x)
    assert out.shape == (4, 3, 3) and out.dtype == dtype
    torch.testing.assert_close(out, w.T @ x @ w, atol=_bound(dtype, 6, x.abs().max()), rtol=0)
    eye = torch.eye(3, dtype=dtype, device=device)
    torch.testing.assert_close(w.T @ w, eye, atol=_bound(dtype, 6), rtol=0)


@pytest.mark.parametrize("optimizer_cls", [geoopt.optim.RiemannianSGD, geoopt.optim.RiemannianAdam])
def test_bimap_keeps_its_weight_on_the_stiefel_manifold_and_its_output_spd(optimizer_cls, device):
    torch.manual_seed(0)
    layer = BiMap(8, 4, device=device, dtype=torch.float64)
    optimizer = optimizer_cls(layer.parameters(), lr=0.05)
    x = _spd((16,), 8, 1, device=device)
    target = torch.linspace(0.5, 2.0, 4, dtype=torch.float64, device=device)
    for _ in range(50):
        optimizer.zero_grad()
        loss = (torch.linalg.eigvalsh(layer(x)) - target).pow(2).sum()
        loss.backward()
        optimizer.step()
    w = layer.weight.detach()
    # geoopt's Stiefel retraction is a QR / Cayley map: orthonormal to rounding at each step
    error = (w.T @ w - torch.eye(4, dtype=torch.float64, device=device)).abs().max()
    assert float(error) <= _bound(torch.float64, 8), float(error)
    assert bool((torch.linalg.eigvalsh(layer(x)) > 0).all())


def test_bimap_double_keeps_the_constraint_to_float64_rounding():
    layer = BiMap(10, 5, dtype=torch.float32).double()
    w = layer.weight.detach()
    assert isinstance(layer.weight, geoopt.ManifoldParameter) and w.dtype == torch.float64
    error = (w.T @ w - torch.eye(5, dtype=torch.float64)).abs().max()
    assert float(error) <= _bound(torch.float64, 10), float(error)


# ------------------------------------------------------------------------- spectral layers
def _closed_form(name, x, eps=0.5):
    out = []
    for a in x.cpu().numpy():
        if name == "log":
            out.append(scipy.linalg.logm(a).real)
        elif name == "exp":
            out.append(scipy.linalg.expm(a))
        else:
            lam, q = np.linalg.eigh(a)
            out.append((q * np.maximum(lam, eps)) @ q.T)
    return torch.tensor(np.stack(out), dtype=x.dtype, device=x.device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["log", "exp", "reeig"])
def test_spectral_layers_against_scipy(name, dtype, device):
    layer = {"log": LogEig(), "exp": ExpEig(), "reeig": ReEig(0.5)}[name]
    x = _spd((5,), 5, 2, torch.float64, device)
    if name == "exp":
        x = _sym(x - 2 * torch.eye(5, dtype=torch.float64, device=device))
    expected = _closed_form(name, x)
    got = layer(x.to(dtype))
    assert got.dtype == dtype
    scale = expected.abs().max()
    if name == "exp":  # exp amplifies an eigenvalue's relative error by the eigenvalue
        scale = scale * torch.linalg.eigvalsh(x).abs().max()
    torch.testing.assert_close(got.double(), expected, atol=_bound(dtype, 5, scale), rtol=0)


REPEATED = [2.0, 2.0, 2.0, 0.25, 0.25]


def _daleckii_krein(f, fprime, x, g):
    """``Q (L o Q^T sym(G) Q) Q^T`` in NumPy, ``L_ij = f'(l_i)`` for exactly equal eigenvalues."""
    lam, q = np.linalg.eigh(x)
    li, lj = lam[:, None], lam[None, :]
    equal = np.isclose(li, lj, rtol=1e-12, atol=0)
    gap = np.where(equal, 1.0, li - lj)
    dd = np.where(equal, fprime(0.5 * (li + lj)), (f(li) - f(lj)) / gap)
    return q @ (dd * (q.T @ (0.5 * (g + g.T)) @ q)) @ q.T


@pytest.mark.parametrize(
    "name, layer, f, fprime",
    [
        ("log", LogEig(), np.log, lambda v: 1 / v),
        ("exp", ExpEig(), np.exp, np.exp),
        ("reeig", ReEig(1.0), lambda v: np.maximum(v, 1.0), lambda v: (v > 1.0).astype(float)),
        (
            "floored-log",
            LogEig(1.0),
            lambda v: np.log(np.maximum(v, 1.0)),
            lambda v: (v > 1.0) / np.maximum(v, 1.0),
        ),
    ],
)
def test_gradient_at_repeated_eigenvalues_is_the_daleckii_krein_formula(
    name, layer, f, fprime, device
):
    x = _spd((3,), 5, 3, device=device, eigenvalues=REPEATED).requires_grad_()
    generator = torch.Generator().manual_seed(4)
    g = torch.randn(3, 5, 5, generator=generator, dtype=torch.float64).to(device)
    (grad,) = torch.autograd.grad((layer(x) * g).sum(), x)
    expected = torch.tensor(
        np.stack(
            [
                _daleckii_krein(f, fprime, a, b)
                for a, b in zip(x.detach().cpu().numpy(), g.cpu().numpy())
            ]
        ),
        device=device,
    )
    assert bool(torch.isfinite(grad).all())
    torch.testing.assert_close(
        _sym(grad), expected, atol=_bound(torch.float64, 5, 10 * g.abs().max()), rtol=0
    )


@pytest.mark.parametrize("eigenvalues", [None, REPEATED], ids=["distinct", "repeated"])
@pytest.mark.parametrize("layer", [LogEig(), ExpEig(), ReEig(1.0), LogEig(1.0)], ids=repr)
def test_gradcheck_in_float64(layer, eigenvalues):
    x = _spd((2,), 5, 5, eigenvalues=eigenvalues).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: layer(_sym(a)), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_floored_log_eig_is_log_eig_after_re_eig(dtype, device):
    # eigenvalues on both sides of the floor, three of them clamped to it (repeated after ReEig)
    x = _spd((3,), 6, 21, device=device, eigenvalues=[0.05, 0.1, 0.2, 0.7, 1.5, 4.0])
    x = x.to(dtype).requires_grad_()
    g = torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(22), dtype=torch.float64)
    g = g.to(dtype=dtype, device=device)
    fused, two_layers = LogEig(0.5), torch.nn.Sequential(ReEig(0.5), LogEig())
    outs = [layer(x) for layer in (fused, two_layers)]
    grads = [torch.autograd.grad((out * g).sum(), x)[0] for out in outs]
    torch.testing.assert_close(outs[0], outs[1], atol=_bound(dtype, 6, 2), rtol=0)
    # divided differences at most 1 / eps = 2
    torch.testing.assert_close(grads[0], grads[1], atol=_bound(dtype, 6, 2 * g.abs().max()), rtol=0)
    LogEig(0.5)(_sym(x.detach() - torch.eye(6, dtype=dtype, device=device)))  # indefinite: floored
    with pytest.raises(ValueError, match="eps"):
        LogEig(0.0)
    assert repr(LogEig(0.5)) == "LogEig(eps=0.5)"


def test_eigh_backward_is_not_finite_where_the_layers_are():
    """The motivation: back-propagating through ``torch.linalg.eigh`` at a repeated eigenvalue."""
    x = _spd((1,), 5, 6, eigenvalues=REPEATED).requires_grad_()
    lam, q = torch.linalg.eigh(x)
    (grad,) = torch.autograd.grad(((q * lam.log().unsqueeze(-2)) @ q.mT).sum(), x)
    assert not bool(torch.isfinite(grad).all())
    x2 = x.detach().requires_grad_()
    (grad,) = torch.autograd.grad(LogEig()(x2).sum(), x2)
    assert bool(torch.isfinite(grad).all())


# ------------------------------------------------------------------------------------ CovPool
@pytest.mark.parametrize("dtype", DTYPES)
def test_covpool_is_the_shrunk_sample_covariance(dtype, device):
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(3, 6, 4, generator=generator, dtype=torch.float64)  # T = 4 < C = 6
    out = CovPool(shrinkage=0.2)(x.to(dtype=dtype, device=device))
    expected = []
    for a in x.numpy():
        s = np.cov(a)
        expected.append(0.8 * s + 0.2 * np.trace(s) / 6 * np.eye(6))
    expected = torch.tensor(np.stack(expected), dtype=dtype, device=device)
    torch.testing.assert_close(out, expected, atol=_bound(dtype, 6, expected.abs().max()), rtol=0)
    assert bool((torch.linalg.eigvalsh(out.double()) > 0).all())


# ---------------------------------------------------------------------------- batch norm
@pytest.mark.parametrize("metric", ["affine_invariant", "log_euclidean"])
def test_batch_norm_output_has_the_identity_as_karcher_mean(metric, device):
    layer = SPDBatchNorm(4, metric=metric, device=device, dtype=torch.float64)
    x = _spd((12,), 4, 8, device=device)
    out = layer(x)
    manifold = spd_manifold(metric)
    mean = karcher_mean(manifold, out.detach(), tol=1e-12)
    eye = torch.eye(4, dtype=torch.float64, device=device)
    assert float(manifold.dist(mean, eye)) <= 1e-6


def _set_bias(layer, metric, bias):
    """Set the batch norm's bias G: the SPD parameter, or log G under the log-Euclidean metric
    (SciPy's matrix logarithm as the independent reference)."""
    with torch.no_grad():
        if metric == "affine_invariant":
            layer.bias.copy_(bias)
        else:
            log_bias = scipy.linalg.logm(bias.cpu().numpy()).real
            layer.log_bias.copy_(torch.as_tensor(log_bias, device=bias.device))


@pytest.mark.parametrize("metric", ["affine_invariant", "log_euclidean"])
def test_batch_norm_output_mean_is_the_bias_and_eval_uses_the_running_mean(metric, device):
    layer = SPDBatchNorm(4, metric=metric, momentum=1.0, device=device, dtype=torch.float64)
    bias = _spd((), 4, 9, device=device)
    _set_bias(layer, metric, bias)
    x = _spd((10,), 4, 10, device=device)
    manifold = spd_manifold(metric)
    out = layer(x)
    batch_mean = karcher_mean(manifold, x, tol=1e-12)
    assert float(manifold.dist(karcher_mean(manifold, out.detach(), tol=1e-12), bias)) <= 1e-6
    # momentum 1: the running mean is the batch mean, so evaluation repeats the training output
    assert float(manifold.dist(layer.running_mean, batch_mean)) <= 1e-6
    layer.eval()
    torch.testing.assert_close(layer(x), out.detach(), atol=1e-6, rtol=0)


def test_batch_norm_trains_through_the_karcher_mean():
    torch.manual_seed(0)
    layer = SPDBatchNorm(3, dtype=torch.float64)
    x = _spd((6,), 3, 11).requires_grad_()
    out = layer(x)
    out.diagonal(dim1=-2, dim2=-1).log().sum().backward()
    assert bool(torch.isfinite(x.grad).all()) and bool(torch.isfinite(layer.bias.grad).all())
    assert isinstance(layer.bias, geoopt.ManifoldParameter)
    assert isinstance(layer.bias.manifold, SymmetricPositiveDefinite)


def test_batch_norm_running_mean_moves_along_the_geodesic():
    layer = SPDBatchNorm(3, momentum=0.25, dtype=torch.float64)
    x = _spd((8,), 3, 12)
    layer(x)
    manifold = spd_manifold("affine_invariant")
    mean = karcher_mean(manifold, x, tol=1e-12)
    eye = torch.eye(3, dtype=torch.float64)
    d_total = float(manifold.dist(eye, mean))
    assert math.isclose(float(manifold.dist(eye, layer.running_mean)), 0.25 * d_total, abs_tol=1e-6)
    assert math.isclose(
        float(manifold.dist(layer.running_mean, mean)), 0.75 * d_total, abs_tol=1e-6
    )


def _frechet_variance(manifold, points, centre):
    return float(manifold.dist(points, centre.expand_as(points)).square().mean())


@pytest.mark.parametrize("metric", ["affine_invariant", "log_euclidean"])
@pytest.mark.parametrize("eps", [0.0, 1e-5])
def test_batch_norm_variance_is_the_learned_dispersion(metric, eps, device):
    # Kobler et al. 2022: the output's Frechet variance about the bias is nu^2 s2 / (s2 + eps),
    # s2 the input's variance about its Karcher mean, and the bias stays the output's mean
    layer = SPDBatchNorm(
        4, metric=metric, variance=True, eps=eps, karcher_kwargs={"tol": 1e-12},
        device=device, dtype=torch.float64,
    )  # fmt: skip
    bias = _spd((), 4, 16, device=device)
    dispersion = 0.7
    _set_bias(layer, metric, bias)
    with torch.no_grad():
        layer.log_dispersion.fill_(math.log(dispersion))
    x = _spd((12,), 4, 17, device=device)
    manifold = spd_manifold(metric)
    out = layer(x).detach()
    variance = _frechet_variance(manifold, x, karcher_mean(manifold, x, tol=1e-12))
    expected = dispersion**2 * variance / (variance + eps)
    # squared distances up to n * 16 (relative log-eigenvalues within [-4, 4]): the rounding of a
    # few eigensolves, relative to that scale
    assert math.isclose(
        _frechet_variance(manifold, out, bias), expected, rel_tol=_bound(torch.float64, 4, 16)
    )
    assert float(manifold.dist(karcher_mean(manifold, out, tol=1e-12), bias)) <= 1e-6


@pytest.mark.parametrize("metric", ["affine_invariant", "log_euclidean"])
def test_batch_norm_variance_running_statistics_in_eval(metric, device):
    x = _spd((10,), 3, 18, device=device)
    manifold = spd_manifold(metric)
    variance = _frechet_variance(manifold, x, karcher_mean(manifold, x, tol=1e-12))
    layer = SPDBatchNorm(
        3, metric=metric, momentum=0.25, variance=True, device=device, dtype=torch.float64
    )
    layer(x)
    assert math.isclose(float(layer.running_var), 0.75 + 0.25 * variance, rel_tol=1e-10)
    # momentum 1: running mean and variance are the batch's, so evaluation repeats training
    layer = SPDBatchNorm(
        3, metric=metric, momentum=1.0, variance=True, karcher_kwargs={"tol": 1e-12},
        device=device, dtype=torch.float64,
    )  # fmt: skip
    out = layer(x).detach()
    assert math.isclose(float(layer.running_var), variance, rel_tol=1e-10)
    layer.eval()
    torch.testing.assert_close(layer(x), out, atol=1e-6, rtol=0)
    # in evaluation the statistics stay put
    layer(_spd((10,), 3, 19, device=device))
    assert math.isclose(float(layer.running_var), variance, rel_tol=1e-10)


def test_batch_norm_variance_matches_spd_learns_mean_var_batch_norm():
    """The peer's SPDBatchNormMeanVar (Kobler et al. 2022) with its Karcher flow run to
    convergence: the same normalisation, in training and with the running statistics."""
    peer_modules = pytest.importorskip("spd_learn.modules")
    x = _spd((12,), 4, 17)
    ours = SPDBatchNorm(
        4, variance=True, eps=1e-5, karcher_kwargs={"tol": 1e-12}, dtype=torch.float64
    )
    peer = peer_modules.SPDBatchNormMeanVar(4, n_iter=100, eps=1e-5, dtype=torch.float64)
    out = ours(x)
    # two Karcher means, fixed points of different iterations: each exact to the rounding of a
    # step, amplified by the condition number of the matrices (eigenvalues in [e^-2, e^2])
    scale = out.detach().abs().max() * math.exp(4)
    torch.testing.assert_close(out, peer(x), atol=_bound(torch.float64, 4, scale), rtol=0)
    assert math.isclose(float(ours.running_var), float(peer.running_var), rel_tol=1e-12)
    ours.eval()
    peer.eval()
    torch.testing.assert_close(ours(x), peer(x), atol=_bound(torch.float64, 4, scale), rtol=0)


def test_batch_norm_variance_trains_the_dispersion():
    layer = SPDBatchNorm(3, variance=True, dtype=torch.float64)
    x = _spd((6,), 3, 20).requires_grad_()
    layer(x).diagonal(dim1=-2, dim2=-1).log().square().sum().backward()
    for grad in (x.grad, layer.bias.grad, layer.log_dispersion.grad):
        assert bool(torch.isfinite(grad).all())
    assert float(layer.log_dispersion.grad.abs()) > 0
    assert "variance=True" in repr(layer)
    with pytest.raises(ValueError, match="variance"):
        SPDBatchNorm(3, variance=1)
    with pytest.raises(ValueError, match="eps"):
        SPDBatchNorm(3, variance=True, eps=-1.0)


# ---------------------------------------------------------------------------------- bad input
def _bad_inputs():
    good = _spd((2,), 4, 13)
    nonsymmetric = good.clone()
    nonsymmetric[:, 0, 1] += 1.0
    nan = good.clone()
    nan[0, 0, 0] = float("nan")
    indefinite = good - 100 * torch.eye(4, dtype=torch.float64)
    return good, {"not symmetric": nonsymmetric, "NaN": nan, "not positive definite": indefinite}


@pytest.mark.parametrize(
    "layer",
    [BiMap(4, 2, dtype=torch.float64), LogEig(), SPDBatchNorm(4, dtype=torch.float64)],
    ids=lambda m: type(m).__name__,
)
def test_bad_spd_input_is_refused_naming_the_argument(layer):
    good, bad = _bad_inputs()
    for message, x in bad.items():
        with pytest.raises(ValueError, match=f"input .*{message}|input holds {message}"):
            layer(x)
    with pytest.raises(ValueError, match=r"input must be \(\.\.\., 4, 4\)|input must be square"):
        layer(_spd((2,), 5, 14)) if not isinstance(layer, LogEig) else layer(good[..., :3])


def test_symmetric_only_layers_accept_indefinite_input_and_refuse_the_rest():
    _, bad = _bad_inputs()
    for layer in (ReEig(), ExpEig()):
        layer(bad["not positive definite"])
        with pytest.raises(ValueError, match="input is not symmetric"):
            layer(bad["not symmetric"])
        with pytest.raises(ValueError, match="input holds NaN"):
            layer(bad["NaN"])


def test_constructor_arguments_are_checked_by_name():
    with pytest.raises(ValueError, match="out_size"):
        BiMap(3, 4)
    with pytest.raises(ValueError, match="in_size"):
        BiMap(0, 0)
    with pytest.raises(ValueError, match="eps"):
        ReEig(0.0)
    with pytest.raises(ValueError, match="shrinkage"):
        CovPool(1.5)
    with pytest.raises(ValueError, match="metric"):
        SPDBatchNorm(3, metric="bures_wasserstein")
    with pytest.raises(ValueError, match="momentum"):
        SPDBatchNorm(3, momentum=0.0)
    with pytest.raises(ValueError, match="T >= 2"):
        CovPool()(torch.randn(3, 4, 1))


# ------------------------------------------------------------------------------------ compile
def _graph_breaks(fn, *args):
    torch._dynamo.reset()
    return torch._dynamo.explain(fn)(*args).graph_break_count


@pytest.mark.parametrize(
    "name",
    [
        "bimap-reeig-logeig",
        "expeig",
        "covpool",
        "batchnorm-eval",
        "batchnorm-le-train",
        "batchnorm-var-eval",
        "batchnorm-le-var-train",
    ],
)
def test_layers_compile_without_graph_breaks_and_match_eager(name):
    torch.manual_seed(0)
    x = _spd((4,), 6, 15, dtype=torch.float32)
    if name == "bimap-reeig-logeig":
        module = torch.nn.Sequential(BiMap(6, 4), ReEig(), LogEig())
    elif name == "expeig":
        module, x = ExpEig(), _sym(torch.randn(4, 6, 6))
    elif name == "covpool":
        module, x = CovPool(0.1), torch.randn(4, 6, 30)
    elif name == "batchnorm-eval":
        module = SPDBatchNorm(6).eval()
    elif name == "batchnorm-var-eval":
        module = SPDBatchNorm(6, variance=True).eval()
    elif name == "batchnorm-le-var-train":
        module = SPDBatchNorm(6, metric="log_euclidean", variance=True)
    else:
        module = SPDBatchNorm(6, metric="log_euclidean")
    assert _graph_breaks(module, x) == 0
    torch._dynamo.reset()
    if hasattr(module, "running_mean"):
        module.reset_parameters()
    expected = module(x)
    if hasattr(module, "running_mean"):
        module.reset_parameters()
    got = torch.compile(module, backend="aot_eager", fullgraph=True)(x)
    tol = _bound(torch.float32, 6, expected.detach().abs().max())
    torch.testing.assert_close(got, expected, atol=tol, rtol=0)


def test_validate_false_keeps_the_shape_checks_only():
    _, bad = _bad_inputs()
    for layer in (
        BiMap(4, 2, validate=False, dtype=torch.float64),
        ReEig(validate=False),
        LogEig(validate=False),
        ExpEig(validate=False),
        SPDBatchNorm(4, metric="log_euclidean", validate=False, dtype=torch.float64),
    ):
        layer(bad["not symmetric"])  # no value check, no host synchronisation
        with pytest.raises(ValueError, match="input must be"):
            layer(torch.ones(2, 4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="validate"):
        LogEig(validate=1)
