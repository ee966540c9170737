"""Token positions: RoPE and its scalings (position interpolation, NTK-aware, YaRN) against their
formulas, ALiBi's slopes and bias against Press et al., the entropy-invariant scale, and the move
of ``rotary`` from ``manifoldnn.models`` (the old names warn and still work)."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldnn.layers import (
    POSITIONS,
    ALiBi,
    NoPosition,
    RotaryPosition,
    alibi_slopes,
    entropy_invariant_scale,
    position_for,
    rotary,
)

EPS64 = torch.finfo(torch.float64).eps


def base_frequencies(theta: float, d: int) -> torch.Tensor:
    return torch.tensor([theta ** (-2 * j / d) for j in range(d // 2)], dtype=torch.float64)


@pytest.mark.parametrize("scaling", [None, "linear", "ntk", "yarn"])
def test_rope_logits_depend_on_the_offset_only(scaling, device):
    """<R_t q, R_s k> is a function of t - s for every scaling (each is a set of frequencies)."""
    rope = RotaryPosition(16, scaling=scaling, factor=4.0, train_length=32)
    q = torch.randn(1, 16, device=device, dtype=torch.float64)
    k = torch.randn(1, 16, device=device, dtype=torch.float64)
    near = (rope.rotate(q, 7) * rope.rotate(k, 3)).sum()
    far = (rope.rotate(q, 5007) * rope.rotate(k, 5003)).sum()
    # angle rounding at position p is about p eps per frequency
    tol = 64 * 5007 * EPS64 * q.norm() * k.norm()
    torch.testing.assert_close(near, far, rtol=0, atol=float(tol))


def test_unscaled_rope_is_rotary():
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    assert torch.equal(RotaryPosition(8, theta=500.0).rotate(x, 11), rotary(x, 11, 500.0))
    torch.testing.assert_close(
        RotaryPosition(8).frequencies(), base_frequencies(10_000.0, 8), rtol=4 * EPS64, atol=0
    )


def test_position_interpolation_divides_the_frequencies():
    """Chen et al. 2023: position m at scale s is position m / s of the unscaled RoPE."""
    s, d = 4.0, 8
    rope = RotaryPosition(d, scaling="linear", factor=s)
    torch.testing.assert_close(
        rope.frequencies(), base_frequencies(10_000.0, d) / s, rtol=4 * EPS64, atol=0
    )
    x = torch.randn(1, 8, dtype=torch.float64)
    # s = 4 divides exactly: position 8 at scale 4 is position 2 unscaled, to the last bit
    assert torch.equal(rope.rotate(x, 8), rotary(x, 2))
    assert rope.logit_scale == 1.0


def test_ntk_base_change():
    """base' = base s^(d/(d-2)): the highest frequency is kept, the lowest divided by s."""
    s, d, theta = 8.0, 16, 10_000.0
    rope = RotaryPosition(d, scaling="ntk", factor=s, theta=theta)
    frequencies = rope.frequencies()
    expected = base_frequencies(theta * s ** (d / (d - 2)), d)
    torch.testing.assert_close(frequencies, expected, rtol=16 * EPS64, atol=0)
    assert frequencies[0] == 1.0
    lowest = base_frequencies(theta, d)[-1] / s
    torch.testing.assert_close(frequencies[-1], lowest, rtol=16 * EPS64, atol=0)


def test_yarn_frequencies_and_temperature():
    """Peng et al. 2023, Sec. 3.4: r = L / lambda = L theta_d / (2 pi); theta_d / s where r < alpha,
    theta_d where r > beta, the linear ramp between; sqrt(1/t) = 0.1 ln s + 1."""
    s, d, L, alpha, beta = 16.0, 32, 512, 1.0, 32.0
    rope = RotaryPosition(d, scaling="yarn", factor=s, train_length=L, alpha=alpha, beta=beta)
    expected = []
    for theta_d in base_frequencies(10_000.0, d).tolist():
        r = L / (2 * math.pi / theta_d)
        gamma = 0.0 if r < alpha else 1.0 if r > beta else (r - alpha) / (beta - alpha)
        expected.append((1 - gamma) * theta_d / s + gamma * theta_d)
    expected = torch.tensor(expected, dtype=torch.float64)
    frequencies = rope.frequencies()
    torch.testing.assert_close(frequencies, expected, rtol=16 * EPS64, atol=0)
    # the test covers all three parts of the ramp
    ratio = L * base_frequencies(10_000.0, d) / (2 * math.pi)
    assert (
        (ratio > beta).any() and (ratio < alpha).any() and ((ratio > alpha) & (ratio < beta)).any()
    )
    assert rope.logit_scale == pytest.approx((0.1 * math.log(s) + 1) ** 2, rel=4 * EPS64)


def test_alibi_slopes_as_published():
    """Press et al. 2021: 2^(-8h/n) for n a power of two; otherwise the slopes of the power of
    two below, then every other slope of the next power of two (their reference code)."""
    assert alibi_slopes(8) == [2.0**-h for h in range(1, 9)]
    assert alibi_slopes(4) == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]
    assert alibi_slopes(6) == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]
    twelve = [2.0 ** (-h) for h in range(1, 9)] + [2.0 ** (-(2 * h - 1) / 2) for h in range(1, 5)]
    assert alibi_slopes(12) == pytest.approx(twelve, rel=EPS64)
    assert alibi_slopes(1) == [2.0**-8]


@pytest.mark.parametrize("num_heads", [4, 6])
def test_alibi_bias_equals_its_formula(num_heads, device):
    """b_{h,ij} = -m_h (i - j) for queries at start + i and keys at j."""
    start, query_length, key_length = 5, 3, 8
    bias = ALiBi(num_heads).logit_bias(
        query_length, key_length, start, device=device, dtype=torch.float64
    )
    slopes = alibi_slopes(num_heads)
    expected = torch.tensor(
        [
            [
                [-slopes[h] * ((start + i) - j) for j in range(key_length)]
                for i in range(query_length)
            ]
            for h in range(num_heads)
        ],
        dtype=torch.float64,
        device=device,
    )
    torch.testing.assert_close(bias, expected, rtol=0, atol=0)


def test_no_position_and_the_choice():
    x = torch.randn(4, 6)
    assert torch.equal(NoPosition().rotate(x, 3), x)
    assert NoPosition().logit_bias(4, 4, 0) is None
    assert set(POSITIONS) == {"rope", "alibi", "none"}
    assert isinstance(position_for("rope", 8, 2), RotaryPosition)
    assert isinstance(position_for("alibi", 8, 2), ALiBi)
    with pytest.raises(ValueError, match="position"):
        position_for("sinusoidal", 8, 2)


def test_rope_scaling_arguments():
    with pytest.raises(ValueError, match="scaling"):
        RotaryPosition(8, scaling="cubic")
    with pytest.raises(ValueError, match="train_length"):
        RotaryPosition(8, scaling="yarn", factor=2.0)
    with pytest.raises(ValueError, match="factor"):
        RotaryPosition(8, scaling="linear", factor=0.5)
    with pytest.raises(ValueError, match="beta"):
        RotaryPosition(8, scaling="yarn", factor=2.0, train_length=16, alpha=4.0, beta=2.0)


def test_entropy_invariant_scale():
    """log n / log L_train, lengths below 2 counted as 2; the int and tensor forms agree."""
    assert entropy_invariant_scale(64, 8) == pytest.approx(2.0, rel=4 * EPS64)
    assert entropy_invariant_scale(1, 8) == entropy_invariant_scale(2, 8)
    n = torch.arange(1, 10, dtype=torch.float64)
    expected = torch.tensor([entropy_invariant_scale(int(v), 4) for v in n], dtype=torch.float64)
    torch.testing.assert_close(entropy_invariant_scale(n, 4), expected, rtol=4 * EPS64, atol=0)


def test_rotary_moved_from_models_with_a_warning():
    import manifoldnn.models
    import manifoldnn.models.rope

    with pytest.warns(FutureWarning, match="manifoldnn.layers.rotary"):
        old = manifoldnn.models.rotary
    assert old is rotary
    with pytest.warns(FutureWarning, match="manifoldnn.layers.rotary"):
        from manifoldnn.models.rope import rotary as old_module_name
    assert old_module_name is rotary
