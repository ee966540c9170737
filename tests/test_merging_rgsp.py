"""RGSP-TEFM as the design notes specify: a d = 3, r = 2 case recomputed step by step in NumPy,
and the algebraic facts of issue 19 (degenerate costs, nearly uniform M, the final formula)."""

import numpy as np
import pytest
import torch
from scipy.special import softmax
from torch import nn

from manifoldnn.merging import rgsp_tefm, rgsp_tefm_matrix

ot = pytest.importorskip("ot", reason="RGSP-TEFM needs POT (the merging extra)")


def _reference(w_a, w_b, r, epsilon=0.1, beta=1.0, eps=1e-8):
    """The notes' steps in NumPy with the readings of ``rgsp_tefm_matrix``'s docstring."""

    def svd(w):
        u, s, vh = np.linalg.svd(w)
        u, s, v = u[:, :r], s[:r], vh[:r].T
        sign = np.where(u[np.abs(u).argmax(0), np.arange(r)] < 0, -1.0, 1.0)
        return u * sign, s, v * sign

    (u_a, s_a, v_a), (u_b, s_b, v_b) = svd(w_a), svd(w_b)
    m = softmax(u_a.T @ u_b / np.sqrt(r), axis=1)
    u_b2 = u_b @ m.T
    c_a = np.array([[np.sum((u_a[:, i] - u_a[:, j]) ** 2) for j in range(r)] for i in range(r)])
    c_b = np.array([[np.sum((u_b2[:, i] - u_b2[:, j]) ** 2) for j in range(r)] for i in range(r)])
    q = np.full(r, 1.0 / r)
    pi, log = ot.gromov.entropic_gromov_wasserstein(
        c_a, c_b, q, q, "square_loss", epsilon=epsilon, log=True
    )
    d = log["gw_dist"]
    gap = s_b - s_a
    p = softmax(np.abs(gap))
    s_bar, h_bar = np.sum(p * gap), -np.sum(p * np.log(p))
    tfi = p * s_bar * (1 - d) / (h_bar + eps)
    tos = np.exp(-beta * d)  # cos(psi, psi) = 1
    delta = m @ (tos * pi) @ gap
    u_rel, v_rel = (u_a + u_b2) / 2, (v_a + v_b @ m.T) / 2
    tau_proj = u_rel @ np.diag(delta) @ v_rel.T
    tau_ortho = (w_b - w_a) - tau_proj
    lam = tfi.mean() / (1 + np.exp(d))
    return (w_a + w_b) / 2 + lam * tau_proj + (1 - lam) * tau_ortho, lam, d


def _pair(seed, shape=(3, 3)):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(shape)
    return base + 0.3 * rng.standard_normal(shape), base + 0.3 * rng.standard_normal(shape)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_d3_r2_matches_the_numpy_recomputation(dtype, seed, device):
    w_a, w_b = _pair(seed)
    expected, lam, d = _reference(w_a, w_b, 2)
    a, b = (torch.tensor(w, dtype=dtype, device=device) for w in (w_a, w_b))
    ours, info = rgsp_tefm_matrix(a, b, 2)
    assert ours.device.type == device.type
    # float32: the SVD and softmax inputs are rounded (eps32 ~ 1.2e-7), amplified by GW's solver
    tol = 1e-11 if dtype == torch.float64 else 1e-4
    np.testing.assert_allclose(ours.double().cpu().numpy(), expected, rtol=0, atol=tol)
    np.testing.assert_allclose(float(info["lambda"]), lam, rtol=0, atol=tol)
    np.testing.assert_allclose(float(info["d"]), d, rtol=0, atol=tol)


def test_issue_facts(dtype, device):
    w_a, w_b = _pair(3, (6, 4))
    a, b = (torch.tensor(w, dtype=dtype, device=device) for w in (w_a, w_b))
    r = 3
    merged, info = rgsp_tefm_matrix(a, b, r)
    eps = torch.finfo(dtype).eps
    # orthonormal columns: every off-diagonal ||u_i - u_j||^2 is 2
    off = ~torch.eye(r, dtype=torch.bool, device=device)
    assert torch.allclose(
        info["C_A"][off], torch.full((r * (r - 1),), 2.0, dtype=dtype, device=device), atol=20 * eps
    )
    # logits u_i^T u_j / sqrt(r) lie in [-1/sqrt(r), 1/sqrt(r)], so M is close to uniform
    m = info["M"]
    assert torch.allclose(m.sum(1), torch.ones(r, dtype=dtype, device=device), atol=10 * eps)
    spread = np.exp(2 / np.sqrt(r))
    assert float(m.max()) <= (1 + 10 * eps) / (1 + (r - 1) / spread)
    assert float(m.min()) >= (1 - 10 * eps) / (1 + (r - 1) * spread)
    # the final formula is W_B + (2 lambda - 1)(tau_proj - D / 2)
    rewritten = b + (2 * info["lambda"] - 1) * (info["tau_proj"] - (b - a) / 2)
    assert torch.allclose(merged, rewritten, rtol=0, atol=50 * eps * float(b.abs().max()))


def test_same_model_and_asymmetry(device):
    w_a, w_b = _pair(4, (5, 5))
    a, b = torch.tensor(w_a, device=device), torch.tensor(w_b, device=device)
    same, _ = rgsp_tefm_matrix(a, a, 2)
    assert torch.allclose(same, a, rtol=0, atol=1e-14)
    forward, _ = rgsp_tefm_matrix(a, b, 2)
    backward, _ = rgsp_tefm_matrix(b, a, 2)
    assert not torch.allclose(forward, backward, atol=1e-6)  # the notes' method is order-dependent
    # the literal tau_proj = U_rel dS U_rel^T is symmetric: W* - (1 - lambda) D is symmetric up to
    # the mean (W_A + W_B) / 2, whatever D is
    literal, info = rgsp_tefm_matrix(a, b, 2, right_basis="u")
    assert torch.allclose(info["tau_proj"], info["tau_proj"].mT, rtol=0, atol=1e-14)
    rest = literal - (a + b) / 2 - (1 - info["lambda"]) * (b - a)
    assert torch.allclose(rest, rest.mT, rtol=0, atol=1e-14)


def test_models_conv_and_errors(device):
    torch.manual_seed(0)
    a = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4, 3)).double().to(device)
    b = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4, 3)).double().to(device)
    merged, infos = rgsp_tefm(a, b, 2, return_info=True)
    assert merged["0.weight"].shape == (4, 2, 3, 3) and set(infos) == {"0.weight", "2.weight"}
    assert torch.allclose(merged["0.bias"], (a[0].bias + b[0].bias) / 2)
    with pytest.raises(ValueError, match="'2.weight' allows"):
        rgsp_tefm(a, b, 4)
    with pytest.raises(ValueError, match="square"):
        tall = torch.randn(4, 3, device=device)
        rgsp_tefm_matrix(tall, tall, 2, right_basis="u")


def test_no_nan_when_a_weight_of_p_underflows(device):
    # singular-value gaps of hundreds make softmax(|S_B - S_A|) underflow to exact zeros
    a = torch.diag(torch.tensor([400.0, 1.0, 0.5], device=device))
    b = torch.diag(torch.tensor([1.0, 0.9, 0.4], device=device))
    merged, info = rgsp_tefm_matrix(a, b, 2)
    assert float(info["p"].min()) == 0.0
    assert bool(torch.isfinite(merged).all()) and bool(torch.isfinite(info["h_bar"]))
