"""The causal token-attention layers beside Transformer-VQ: RandomFeatureAttention (FAVOR+ and
FAVOR++ on tokens) and ReLUSquaredAttention (GAU's normalisation). Decoding with the cache equals
the whole sequence, nothing leaks from later tokens, the formulas hold, bad input names itself, and
the layers compile without graph breaks (the decoding, leak and compile checks cover
TransformerVQAttention too)."""

from __future__ import annotations

import pytest
import torch

from manifoldnn.layers import (
    RandomFeatureAttention,
    ReLUSquaredAttention,
    TransformerVQAttention,
    favor_kernel_sums,
    mean_squared_pair_norm,
    optimal_feature_parameter,
    relu_squared_attention,
)

F64 = torch.float64
EPS = torch.finfo(F64).eps


def make(kind, device, dtype=F64):
    torch.manual_seed(0)
    if kind == "relu2":
        return ReLUSquaredAttention(16, 2, device=device, dtype=dtype).eval()
    if kind in ("vq", "vq_rope"):
        position = {"position": "rope", "window": 3} if kind == "vq_rope" else {}
        return TransformerVQAttention(
            16, 2, codebook_size=8, block_size=4, device=device, dtype=dtype, **position
        ).eval()
    return RandomFeatureAttention(
        16, 2, estimator=kind, num_features=12, chunk_size=4, device=device, dtype=dtype
    ).eval()


KINDS = ["favor+", "favor++", "relu2"]
# with Transformer-VQ (tests/test_transformer_vq.py tests its cache)
ALL_KINDS = [*KINDS, "vq", "vq_rope"]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_decoding_token_by_token_equals_the_whole_sequence(kind, device):
    attention = make(kind, device)
    if kind == "favor++":
        attention.rho.fill_(3.0)  # a non-zero A
    x = torch.randn(2, 11, 16, dtype=F64, device=device)
    whole, _ = attention(x)
    outputs, cache = [], None
    for t in range(11):
        y, cache = attention(x[:, t : t + 1], cache)
        outputs.append(y)
    tol = 64 * 11 * EPS
    torch.testing.assert_close(torch.cat(outputs, 1), whole, rtol=tol, atol=tol)
    # a prefix then the rest, too
    first, cache = attention(x[:, :6])
    second, _ = attention(x[:, 6:], cache)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_nothing_leaks_from_later_tokens(kind, device):
    attention = make(kind, device)
    x = torch.randn(2, 11, 16, dtype=F64, device=device)
    changed = x.clone()
    changed[:, 7] = torch.randn(2, 16, dtype=F64, device=device)
    before, after = attention(x)[0], attention(changed)[0]
    assert torch.equal(before[:, :7], after[:, :7])
    assert not torch.equal(before[:, 7:], after[:, 7:])


def test_random_feature_attention_is_favor_on_the_heads(device):
    attention = make("favor++", device)
    attention.rho.fill_(2.0)
    x = torch.randn(2, 9, 16, dtype=F64, device=device)
    q, k, v = attention.qkv(x).view(2, 9, 3, 2, 8).permute(2, 0, 3, 1, 4)
    a = optimal_feature_parameter(attention.rho, 8)
    num, den, _ = favor_kernel_sums(
        q / 8**0.25, k / 8**0.25, v, attention.features, causal=True, feature_parameter=a
    )
    heads = (num / den.unsqueeze(-1)).transpose(1, 2).reshape(2, 9, 16)
    tol = 64 * 9 * EPS
    torch.testing.assert_close(attention(x)[0], attention.out(heads), rtol=tol, atol=tol)


def test_running_rho_follows_the_batches_in_training_mode(device):
    attention = make("favor++", device).train()
    x = torch.randn(2, 9, 16, dtype=F64, device=device)
    q, k, _ = attention.qkv(x).view(2, 9, 3, 2, 8).permute(2, 0, 3, 1, 4).detach()
    batch = mean_squared_pair_norm(q / 8**0.25, k / 8**0.25).mean(0)
    attention(x)
    torch.testing.assert_close(attention.rho, 0.1 * batch, rtol=16 * EPS, atol=0)
    attention.eval()(x)
    torch.testing.assert_close(attention.rho, 0.1 * batch, rtol=16 * EPS, atol=0)


def test_random_features_approach_softmax_attention_with_many_features():
    # the estimator is consistent in m: at logits of order one and m = 8192 the relative error
    # is of order sqrt((e^{|x+y|^2} - 1) / m) ~ 0.03; 0.2 leaves room for the draw
    torch.manual_seed(1)
    attention = RandomFeatureAttention(8, 1, num_features=8192, dtype=F64).eval()
    with torch.no_grad():
        attention.qkv.weight.mul_(0.5)
    x = torch.randn(1, 20, 8, dtype=F64)
    q, k, v = attention.qkv(x).view(1, 20, 3, 1, 8).permute(2, 0, 3, 1, 4)
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    exact = attention.out(exact.transpose(1, 2).reshape(1, 20, 8))
    error = (attention(x)[0] - exact).norm() / exact.norm()
    assert error < 0.2


def test_relu_squared_attention_formula(device):
    gen = torch.Generator().manual_seed(2)
    q, k, v = torch.randn(3, 2, 7, 4, generator=gen, dtype=F64).to(device).unbind(0)
    scores = torch.relu(q @ k.transpose(-1, -2) / 2.0).square()
    tol = 64 * EPS
    torch.testing.assert_close(relu_squared_attention(q, k, v), scores @ v / 7, rtol=tol, atol=tol)
    causal = torch.stack(
        [(scores[:, i, : i + 1, None] * v[:, : i + 1]).sum(1) / (i + 1) for i in range(7)], dim=1
    )
    got = relu_squared_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(got, causal, rtol=tol, atol=tol)
    # the last queries of a longer key sequence (decoding): bottom-right aligned
    tail = relu_squared_attention(q[:, 4:], k, v, is_causal=True)
    torch.testing.assert_close(tail, causal[:, 4:], rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="is_causal"):
        relu_squared_attention(q, k[:, :3], v[:, :3], is_causal=True)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="estimator"):
        RandomFeatureAttention(16, 2, estimator="favor#")
    with pytest.raises(ValueError, match="num_features"):
        RandomFeatureAttention(16, 2, num_features=0)
    with pytest.raises(ValueError, match="momentum"):
        RandomFeatureAttention(16, 2, momentum=0.0)
    with pytest.raises(ValueError, match="num_heads"):
        ReLUSquaredAttention(10, 4)
    for kind in KINDS:
        attention = make(kind, "cpu", torch.float32)
        _, cache = attention(torch.randn(2, 5, 16))
        with pytest.raises(ValueError, match="cache"):
            attention(torch.randn(3, 1, 16), cache)  # another batch
        with pytest.raises(ValueError, match="x must"):
            attention(torch.randn(2, 1, 8))
    with pytest.raises(ValueError, match="window"):
        TransformerVQAttention(16, 2, block_size=4, position="rope", window=5)
    with pytest.raises(ValueError, match="window"):
        TransformerVQAttention(16, 2, block_size=4, window=2)  # no positions, no window
    with pytest.raises(ValueError, match="position"):
        TransformerVQAttention(16, 2, position="alibi")
    rope, plain = make("vq_rope", "cpu", torch.float32), make("vq", "cpu", torch.float32)
    with pytest.raises(ValueError, match="cache"):  # a cache without the recent tokens
        rope(torch.randn(2, 1, 16), plain(torch.randn(2, 5, 16))[1])
    other = RandomFeatureAttention(16, 2, num_features=6).eval()
    _, cache = other(torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="cache"):
        make("favor+", "cpu", torch.float32)(torch.randn(2, 1, 16), cache)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_compiles_without_graph_breaks(kind):
    attention = make(kind, "cpu", torch.float32)
    tokens = torch.randn(2, 9, 16)
    prefix = attention(torch.randn(2, 4, 16))[1]
    # the whole sequence, its continuation after a prefix, and one decoding step
    for x, cache in ((tokens, None), (tokens, prefix), (tokens[:, :1], prefix)):
        torch._dynamo.reset()
        assert torch._dynamo.explain(attention)(x, cache).graph_break_count == 0
        torch._dynamo.reset()
        compiled = torch.compile(attention, backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(
            compiled(x, cache)[0], attention(x, cache)[0], rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("kind", ["favor++", "vq", "vq_rope"])
def test_training_mode_compiles_without_graph_breaks(kind):
    # the buffers written in training mode (FAVOR++'s running rho, the codebooks' moving
    # averages) and the commitment loss left on the module trace into one graph
    attention = make(kind, "cpu", torch.float32).train()
    x = torch.randn(2, 9, 16)
    torch._dynamo.reset()
    assert torch._dynamo.explain(attention)(x).graph_break_count == 0
    torch._dynamo.reset()
    compiled = torch.compile(attention, backend="aot_eager", fullgraph=True)
    y, _ = compiled(x)
    y.sum().backward()
    assert attention.qkv.weight.grad is not None
