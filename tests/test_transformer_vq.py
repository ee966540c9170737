"""Transformer-VQ (Lingle 2023): the block form equals softmax attention over the quantised keys,
the recurrent form equals the block form, and the codebook follows its moving-average k-means
update; that nothing leaks from later tokens and that the layer compiles without graph breaks is
tested with the other token-attention layers (tests/test_token_attention.py)."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldnn.layers import TransformerVQAttention, rotary, vector_quantize, vq_attention

F64 = torch.float64
EPS = torch.finfo(F64).eps


def rounding(length: int) -> float:
    # a softmax-weighted mean of O(1) values over <= length + S terms, summed in two orders
    return 16 * length * EPS


def inputs(device, length=37, heads=3, size=8, codes=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(3, 2, heads, length, size, generator=gen, dtype=F64).to(device).unbind(0)
    codebook = torch.randn(heads, codes, size, generator=gen, dtype=F64).to(device)
    return q, k, v, codebook


def test_vector_quantize_picks_the_nearest_codeword(device):
    q, k, v, codebook = inputs(device)
    codes, quantised = vector_quantize(k, codebook)
    distances = (k.unsqueeze(-2) - codebook.unsqueeze(-3)).pow(2).sum(-1)
    assert torch.equal(codes, distances.argmin(-1))
    assert torch.equal(quantised, codebook[torch.arange(3, device=device)[:, None], codes])


@pytest.mark.parametrize("block_size", [1, 5, 8, 37, 100])
def test_block_form_is_softmax_attention_over_quantised_keys(block_size, device):
    q, k, v, codebook = inputs(device)
    _, quantised = vector_quantize(k, codebook)
    exact = torch.nn.functional.scaled_dot_product_attention(q, quantised, v, is_causal=True)
    out, (sums, counts) = vq_attention(q, k, v, codebook, block_size=block_size)
    tol = rounding(37)
    torch.testing.assert_close(out, exact, rtol=tol, atol=tol)
    assert torch.equal(counts.sum(-1), torch.full((2, 3), 37.0, dtype=F64, device=device))
    codes, _ = vector_quantize(k, codebook)
    one_hot = torch.nn.functional.one_hot(codes, 16).to(F64)
    torch.testing.assert_close(sums, one_hot.transpose(-1, -2) @ v, rtol=tol, atol=tol)


def test_block_form_over_many_blocks_and_a_large_codebook(device):
    """Long sequences with large codebooks run in several groups of blocks (one block a group
    here), the state carried between them; still their definitions."""
    q, k, v, _ = inputs(device, length=700, heads=1, size=4)
    codebook = torch.randn(1, 1024, 4, generator=torch.Generator().manual_seed(5), dtype=F64)
    codebook = codebook.to(device)
    _, quantised = vector_quantize(k, codebook)
    exact = torch.nn.functional.scaled_dot_product_attention(q, quantised, v, is_causal=True)
    out, (sums, counts) = vq_attention(q, k, v, codebook, block_size=128)
    tol = rounding(700)
    torch.testing.assert_close(out, exact, rtol=tol, atol=tol)
    assert torch.equal(counts.sum(-1), torch.full((2, 1), 700.0, dtype=F64, device=device))
    out, state = vq_attention(q, k, v, codebook, block_size=128, window=50)
    expected = windowed_reference(q, k, v, codebook, 50)
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)
    assert torch.equal(state[1].sum(-1), torch.full((2, 1), 700.0 - 128, dtype=F64, device=device))


def test_block_form_gradients(device):
    """gradcheck of the block form in the query, the values and the state it starts from (the keys'
    gradient is straight-through, tested below)."""
    q, k, v, codebook = inputs(device, length=11, heads=2, size=4, codes=5)
    _, state = vq_attention(q, k, v, codebook, block_size=4)
    sums, counts = state[0].clone().requires_grad_(), state[1]

    def f(query, value, sums):
        out, (new_sums, _) = vq_attention(
            query, k, value, codebook, block_size=4, state=(sums, counts)
        )
        return out, new_sums

    args = (q.requires_grad_(), v.requires_grad_(), sums)
    assert torch.autograd.gradcheck(f, args)


def test_recurrent_form_equals_block_form(device):
    q, k, v, codebook = inputs(device)
    block, block_state = vq_attention(q, k, v, codebook, block_size=6)
    recurrent, recurrent_state = vq_attention(q, k, v, codebook, mode="recurrent")
    tol = rounding(37)
    torch.testing.assert_close(recurrent, block, rtol=tol, atol=tol)
    for a, b in zip(recurrent_state, block_state):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_state_continues_the_sequence(device):
    q, k, v, codebook = inputs(device)
    whole, _ = vq_attention(q, k, v, codebook, block_size=6)
    first, state = vq_attention(
        q[..., :20, :], k[..., :20, :], v[..., :20, :], codebook, block_size=6
    )
    second, _ = vq_attention(
        q[..., 20:, :], k[..., 20:, :], v[..., 20:, :], codebook, block_size=6, state=state
    )
    tol = rounding(37)
    torch.testing.assert_close(torch.cat([first, second], -2), whole, rtol=tol, atol=tol)


def layer(device, **kwargs):
    torch.manual_seed(0)
    options = {"codebook_size": 8, "block_size": 4, "dtype": F64, "device": device}
    return TransformerVQAttention(16, 2, **(options | kwargs)).eval()


def test_cache_after_decoding_equals_the_whole_sequence_cache(device):
    # the outputs of token-by-token decoding are tested with the other token-attention layers
    # (tests/test_token_attention.py); the cache holds S value sums and counts per head
    vq = layer(device)
    x = torch.randn(2, 13, 16, dtype=F64, device=device)
    _, cache = vq(x)
    stepped = None
    for t in range(13):
        stepped = vq(x[:, t : t + 1], stepped)[1]
    tol = rounding(13)
    for a, b in zip(stepped, cache):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    assert cache[0].shape == (2, 2, 8, 8) and cache[1].shape == (2, 2, 8)


def test_unbatched_input(device):
    vq = layer(device)
    x = torch.randn(9, 16, dtype=F64, device=device)
    y, (sums, counts) = vq(x)
    torch.testing.assert_close(y, vq(x[None])[0][0], rtol=0, atol=0)
    assert sums.shape == (1, 2, 8, 8)


def test_codebook_moves_by_its_moving_average_update(device):
    vq = layer(device, decay=0.9).train()
    x = torch.randn(2, 13, 16, dtype=F64, device=device)
    keys = vq.qkv(x).view(2, 13, 3, 2, 8)[:, :, 1].transpose(1, 2).detach()  # (B, H, T, D)
    codebook, count, total = vq.codebook.clone(), vq.ema_count.clone(), vq.ema_sum.clone()
    codes, quantised = vector_quantize(keys, codebook)
    vq(x)
    one_hot = torch.nn.functional.one_hot(codes, 8).to(F64)  # (B, H, T, S)
    assigned = one_hot.sum((0, 2))
    sums = torch.einsum("bhts,bhtd->hsd", one_hot, keys)
    expected = (0.9 * total + 0.1 * sums) / (0.9 * count + 0.1 * assigned).unsqueeze(-1)
    tol = rounding(26)
    torch.testing.assert_close(vq.codebook, expected, rtol=tol, atol=tol)
    # the commitment loss of that forward: beta times the mean squared distance to the codeword
    commitment = 1e-4 * (keys - quantised).pow(2).sum(-1).mean()
    torch.testing.assert_close(vq.commitment_loss.detach(), commitment, rtol=tol, atol=0)


def test_repeated_updates_converge_to_the_k_means_of_fixed_keys(device):
    vq = layer(device, decay=0.5, block_size=64).train()
    x = torch.randn(1, 64, 16, dtype=F64, device=device)
    with torch.no_grad():
        for _ in range(150):
            vq(x)
    keys = vq.qkv(x).view(1, 64, 3, 2, 8)[:, :, 1].transpose(1, 2).detach()
    codes, _ = vector_quantize(keys, vq.codebook)
    one_hot = torch.nn.functional.one_hot(codes, 8).to(F64)[0]  # (H, T, S)
    used = one_hot.sum(1) > 0
    means = (one_hot.transpose(-1, -2) @ keys[0]) / one_hot.sum(1).clamp_min(1).unsqueeze(-1)
    # a fixed point of Lloyd's iteration: every used codeword is the mean of its keys
    torch.testing.assert_close(vq.codebook[used], means[used], rtol=1e-9, atol=1e-9)


def test_keys_learn_through_the_straight_through_estimator(device):
    vq = layer(device).train()
    x = torch.randn(2, 13, 16, dtype=F64, device=device)
    y, _ = vq(x)
    (y.pow(2).sum() + vq.commitment_loss).backward()
    key_rows = vq.qkv.weight.grad.view(3, 16, 16)[1]
    assert key_rows.abs().sum() > 0


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="num_heads"):
        TransformerVQAttention(10, 3)
    with pytest.raises(ValueError, match="codebook_size"):
        TransformerVQAttention(16, 2, codebook_size=0)
    with pytest.raises(ValueError, match="block_size"):
        TransformerVQAttention(16, 2, block_size=0)
    with pytest.raises(ValueError, match="decay"):
        TransformerVQAttention(16, 2, decay=1.0)
    vq = TransformerVQAttention(16, 2, codebook_size=8).eval()
    with pytest.raises(ValueError, match="x must"):
        vq(torch.randn(2, 5, 12))
    other = TransformerVQAttention(16, 2, codebook_size=4).eval()
    _, cache = other(torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="cache"):
        vq(torch.randn(2, 1, 16), cache)
    q = torch.randn(4, 8)
    with pytest.raises(ValueError, match="mode"):
        vq_attention(q, q, q, torch.randn(3, 8), mode="chunked")
    with pytest.raises(ValueError, match="codebook"):
        vq_attention(q, q, q, torch.randn(3, 5))


def test_half_precision_keeps_an_exact_cache(device):
    # bfloat16 holds integers exactly only up to 256; the cache is float32, the output bfloat16
    vq = layer(device, dtype=torch.bfloat16)
    x = torch.randn(1, 300, 16, device=device, dtype=torch.bfloat16)
    y, (sums, counts) = vq(x)
    assert y.dtype == torch.bfloat16 and sums.dtype == counts.dtype == torch.float32
    assert torch.equal(counts.sum(-1), torch.full((1, 2), 300.0, device=device))


# ---------------------------------------------------------------- rotary positions in a window
def windowed_reference(q, k, v, codebook, window, theta=10_000.0):
    """The definition written out densely: rotary logits for 0 <= i - j < W, content logits for
    older keys, causal softmax over all T keys."""
    _, k_hat = vector_quantize(k, codebook)
    scale = q.shape[-1] ** -0.5
    content = q @ k_hat.transpose(-1, -2) * scale
    rotated = rotary(q, 0, theta) @ rotary(k_hat, 0, theta).transpose(-1, -2) * scale
    steps = torch.arange(q.shape[-2], device=q.device)
    distance = steps[:, None] - steps[None, :]
    logits = torch.where(distance < window, rotated, content).masked_fill(distance < 0, -math.inf)
    return torch.softmax(logits, -1) @ v


@pytest.mark.parametrize(("block_size", "window"), [(1, 1), (5, 3), (8, 8), (16, 5), (50, 20)])
def test_windowed_block_form_is_its_definition(block_size, window, device):
    q, k, v, codebook = inputs(device)
    out, state = vq_attention(q, k, v, codebook, block_size=block_size, window=window)
    tol = rounding(37)
    expected = windowed_reference(q, k, v, codebook, window)
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)
    # the state: every token but the last block_size in the cache, those kept exactly
    kept = min(block_size, 37)
    assert torch.equal(state[1].sum(-1), torch.full((2, 3), 37.0 - kept, dtype=F64, device=device))
    assert torch.equal(state[2][..., -kept:], vector_quantize(k, codebook)[0][..., -kept:])


def test_windowed_recurrent_form_and_continuation_equal_the_definition(device):
    q, k, v, codebook = inputs(device)
    expected = windowed_reference(q, k, v, codebook, 6)
    tol = rounding(37)
    recurrent, recurrent_state = vq_attention(
        q, k, v, codebook, block_size=8, window=6, mode="recurrent"
    )
    torch.testing.assert_close(recurrent, expected, rtol=tol, atol=tol)
    # two chunks in block form, the state carried between them
    first, state = vq_attention(
        q[..., :13, :], k[..., :13, :], v[..., :13, :], codebook, block_size=8, window=6
    )
    second, block_state = vq_attention(
        q[..., 13:, :],
        k[..., 13:, :],
        v[..., 13:, :],
        codebook,
        block_size=8,
        window=6,
        state=state,
    )
    torch.testing.assert_close(torch.cat([first, second], -2), expected, rtol=tol, atol=tol)
    for a, b in zip(recurrent_state, block_state):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_windowed_block_form_gradients(device):
    q, k, v, codebook = inputs(device, length=11, heads=2, size=4, codes=5)

    def f(query, value):
        return vq_attention(query, k, value, codebook, block_size=4, window=3)[0]

    assert torch.autograd.gradcheck(f, (q.requires_grad_(), v.requires_grad_()))


def test_window_errors_name_the_argument():
    q, k, v, codebook = inputs("cpu", length=5)
    with pytest.raises(ValueError, match="window"):
        vq_attention(q, k, v, codebook, block_size=4, window=5)
    with pytest.raises(ValueError, match="window"):
        vq_attention(q, k, v, codebook, block_size=4, window=-1)
    with pytest.raises(ValueError, match="even"):
        vq_attention(q[..., :3], k[..., :3], v, codebook[..., :3], block_size=4, window=2)
    _, state = vq_attention(q, k, v, codebook, block_size=4)  # a state without the window part
    with pytest.raises(ValueError, match="state must be"):
        vq_attention(q, k, v, codebook, block_size=4, window=2, state=state)
