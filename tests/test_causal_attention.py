"""Causal self-attention (MHA, GQA, MQA) and multi-head latent attention (MLA): cached decoding
equals the full forward, grouped-query attention is multi-head attention with tied key/value heads,
the cache sizes are the formulas, no token sees a later one, the modules compile without graph
breaks, bad arguments name themselves, and GPT builds either attention (its default unchanged).

Tolerances: the cached and full forms sum the same products in another order (and MLA's absorbed
form reassociates ``q^T (W c)`` as ``(W^T q)^T c``), so they agree to a few ulps per term of the
longest sum, ``n eps`` with ``n`` the widest contraction.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from manifoldnn.layers import (
    ALiBi,
    CausalSelfAttention,
    MultiHeadLatentAttention,
    RotaryPosition,
    rotary,
)
from manifoldnn.models import GPT, GPTConfig

DIM, HEADS = 32, 4
EPS64 = torch.finfo(torch.float64).eps


def bound(*widths: int) -> float:
    """Rounding bound of two orders of the same sums: 8 ulps per term of the widest one."""
    return 8 * max(widths) * EPS64


def make(kind: str, position="rope", device="cpu", dtype=torch.float64, **options):
    torch.manual_seed(0)
    if kind == "mla":
        return MultiHeadLatentAttention(
            DIM, HEADS, kv_rank=12, rope_dim=4, position=position, device=device, dtype=dtype,
            **options,
        )  # fmt: skip
    if kind == "mla_q":
        return MultiHeadLatentAttention(
            DIM, HEADS, kv_rank=12, rope_dim=4, q_rank=10, bias=True, position=position,
            device=device, dtype=dtype, **options,
        )  # fmt: skip
    kv = {"mha": HEADS, "gqa": 2, "mqa": 1}[kind]
    return CausalSelfAttention(
        DIM, HEADS, num_kv_heads=kv, position=position, device=device, dtype=dtype, **options
    )


KINDS = ["mha", "gqa", "mqa", "mla", "mla_q"]
POSITION_CASES = {
    "rope": lambda width, heads: "rope",
    "alibi": lambda width, heads: "alibi",
    "none": lambda width, heads: "none",
    "yarn": lambda width, heads: RotaryPosition(width, scaling="yarn", factor=4.0, train_length=8),
}


def rotary_width(kind: str) -> int:
    return 4 if kind.startswith("mla") else DIM // HEADS


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("position", list(POSITION_CASES))
def test_cached_decoding_equals_the_full_forward(kind, position, device):
    """A prompt, then a block of three tokens, then one token at a time through the cache give
    the outputs of one causal forward over the whole sequence."""
    options = {}
    if position == "yarn":
        options = {"log_length_scaling": True, "train_length": 8}
    attention = make(
        kind, POSITION_CASES[position](rotary_width(kind), HEADS), device, **options
    ).eval()
    x = torch.randn(2, 13, DIM, device=device, dtype=torch.float64)
    full, none = attention(x)
    assert none is None
    cache = attention.empty_cache(2, max_length=16)
    pieces = []
    for start, stop in [(0, 6), (6, 9)] + [(t, t + 1) for t in range(9, 13)]:
        y, cache = attention(x[:, start:stop], cache)
        pieces.append(y)
    assert cache.length == 13
    tol = bound(DIM, 12)
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", ["gqa", "mla"])
def test_unbatched_input(kind):
    attention = make(kind).eval()
    x = torch.randn(7, DIM, dtype=torch.float64)
    y, _ = attention(x)
    assert y.shape == (7, DIM)
    torch.testing.assert_close(y, attention(x[None])[0][0], rtol=0, atol=0)


def test_mla_decoding_never_rebuilds_keys_or_values():
    """With a cache (the absorbed form) the up-projections W^UK, W^UV are used as matrices, never
    applied to the cached latents."""
    attention = make("mla").eval()
    calls = []
    for module in (attention.key_up, attention.value_up):
        module.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(1, 5, DIM, dtype=torch.float64)
    cache = attention.empty_cache(1, 5)
    for t in range(5):
        attention(x[:, t : t + 1], cache)
    assert not calls
    attention(x)  # the training form rebuilds them
    assert len(calls) == 2


def test_gqa_is_mha_with_tied_key_value_heads():
    """Grouped-query attention equals multi-head attention whose key and value heads repeat each
    group's head for the group's query heads (head i reads key/value head i // (n_h / n_g))."""
    gqa = make("gqa").eval()
    mha = make("mha").eval()
    d, g = DIM // HEADS, 2
    q, k, v = gqa.qkv.weight.split((HEADS * d, g * d, g * d))
    tied = [w.view(g, d, DIM).repeat_interleave(HEADS // g, 0).reshape(-1, DIM) for w in (k, v)]
    with torch.no_grad():
        mha.qkv.weight.copy_(torch.cat([q, *tied]))
        mha.proj.weight.copy_(gqa.proj.weight)
    x = torch.randn(3, 11, DIM, dtype=torch.float64)
    tol = bound(DIM)
    torch.testing.assert_close(gqa(x)[0], mha(x)[0], rtol=tol, atol=tol)


def test_gqa_with_as_many_groups_as_heads_is_mha():
    mha = make("mha").eval()
    gqa = CausalSelfAttention(DIM, HEADS, num_kv_heads=HEADS, dtype=torch.float64).eval()
    gqa.load_state_dict(mha.state_dict())
    x = torch.randn(2, 9, DIM, dtype=torch.float64)
    assert torch.equal(gqa(x)[0], mha(x)[0])


@pytest.mark.parametrize(
    ("kind", "formula"),
    [
        ("mha", 2 * HEADS * (DIM // HEADS)),  # 2 n_h d_h
        ("gqa", 2 * 2 * (DIM // HEADS)),  # 2 n_g d_h
        ("mqa", 2 * (DIM // HEADS)),  # 2 d_h
        ("mla", 12 + 4),  # d_c + d_h^R
    ],
)
def test_cache_sizes_equal_the_formulas(kind, formula):
    attention = make(kind)
    cache = attention.empty_cache(3, max_length=10)
    assert attention.cache_size_per_token == formula
    assert cache.numel_per_token == formula
    assert sum(t.numel() for t in cache.tensors) == 3 * 10 * formula


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_no_leak_from_later_tokens(kind, position, device):
    """Changing the last tokens leaves every earlier output unchanged."""
    attention = make(kind, position, device).eval()
    x = torch.randn(2, 12, DIM, device=device, dtype=torch.float64)
    changed = x.clone()
    changed[:, 8:] = torch.randn(2, 4, DIM, device=device, dtype=torch.float64)
    before, after = attention(x)[0], attention(changed)[0]
    torch.testing.assert_close(after[:, :8], before[:, :8], rtol=0, atol=0)
    assert not torch.allclose(after[:, 8:], before[:, 8:])


def reference_attention(attention: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Causal attention written out: logits, mask, softmax, per query head."""
    h, g, d = attention.num_heads, attention.num_kv_heads, attention.head_size
    length = x.shape[-2]
    q, k, v = (x @ attention.qkv.weight.T).split((h * d, g * d, g * d), -1)
    q, k, v = (t.unflatten(-1, (-1, d)).transpose(-2, -3) for t in (q, k, v))
    q, k = attention.position.rotate(q, 0), attention.position.rotate(k, 0)
    k, v = k.repeat_interleave(h // g, -3), v.repeat_interleave(h // g, -3)
    logits = q @ k.transpose(-1, -2) / math.sqrt(d) * attention.position.logit_scale
    if attention.log_length_scaling:
        n = torch.arange(1, length + 1, dtype=x.dtype).clamp_min(2)
        logits = logits * (n.log() / math.log(attention.train_length))[:, None]
    bias = attention.position.logit_bias(length, length, 0, dtype=x.dtype)
    if bias is not None:
        logits = logits + bias
    future = torch.ones(length, length, dtype=torch.bool).triu(1)
    weights = torch.softmax(logits.masked_fill(future, -math.inf), -1)
    y = (weights @ v).transpose(-2, -3).flatten(-2)
    return y @ attention.proj.weight.T


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"position": "alibi", "num_kv_heads": 2},
        {"position": "none", "num_kv_heads": 1},
        {"log_length_scaling": True, "train_length": 4},
        {
            "position": RotaryPosition(8, scaling="yarn", factor=8.0, train_length=4),
            "log_length_scaling": True,
            "train_length": 4,
        },
    ],
    ids=["rope", "alibi-gqa", "none-mqa", "rope-log-n", "yarn-log-n"],
)
def test_matches_the_written_out_attention(options):
    torch.manual_seed(1)
    attention = CausalSelfAttention(DIM, HEADS, dtype=torch.float64, **options).eval()
    x = torch.randn(2, 10, DIM, dtype=torch.float64)
    tol = bound(DIM)
    torch.testing.assert_close(
        attention(x)[0], reference_attention(attention, x), rtol=tol, atol=tol
    )


def test_mla_matches_the_equations():
    """MLA's training form against Sec. 2.1 of DeepSeek-V2 written out with the layer's maps."""
    attention = make("mla").eval()
    with torch.no_grad():
        attention.kv_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 9, DIM, dtype=torch.float64)
    h, d, r, c = HEADS, DIM // HEADS, 4, 12
    q = attention.query(x).unflatten(-1, (h, d + r)).transpose(1, 2)
    q_content, q_rope = q.split((d, r), -1)
    latent, k_rope = attention.kv_down(x).split((c, r), -1)
    rms = latent.pow(2).mean(-1, keepdim=True).add(torch.finfo(x.dtype).eps).rsqrt()
    latent = latent * rms * attention.kv_norm.weight  # RMSNorm, Sec. 3.1.2
    k_content = attention.key_up(latent).unflatten(-1, (h, d)).transpose(1, 2)
    v = attention.value_up(latent).unflatten(-1, (h, d)).transpose(1, 2)
    q_rope, k_rope = rotary(q_rope), rotary(k_rope)[:, None].expand(-1, h, -1, -1)
    logits = (
        q_content @ k_content.transpose(-1, -2) + q_rope @ k_rope.transpose(-1, -2)
    ) / math.sqrt(d + r)
    future = torch.ones(9, 9, dtype=torch.bool).triu(1)
    o = torch.softmax(logits.masked_fill(future, -math.inf), -1) @ v
    expected = attention.proj(o.transpose(1, 2).flatten(-2))
    tol = bound(DIM, c)
    torch.testing.assert_close(attention(x)[0], expected, rtol=tol, atol=tol)


def graph_breaks(fn, *args) -> int:
    torch._dynamo.reset()
    return torch._dynamo.explain(fn)(*args).graph_break_count


@pytest.mark.parametrize("kind", ["mha", "gqa", "mqa", "mla"])
@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_compiles_without_graph_breaks(kind, position):
    attention = make(kind, position, dtype=torch.float32).eval()
    x = torch.randn(2, 10, DIM)

    def full(x):
        return attention(x)[0]

    assert graph_breaks(full, x) == 0
    torch._dynamo.reset()
    compiled = torch.compile(full, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), full(x))


@pytest.mark.parametrize("kind", ["gqa", "mla"])
def test_cached_step_compiles_without_graph_breaks(kind):
    attention = make(kind, dtype=torch.float32).eval()
    x = torch.randn(2, 1, DIM)

    def step(x, cache):
        return attention(x, cache)[0]

    assert graph_breaks(step, x, attention.empty_cache(2, 4)) == 0


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"num_kv_heads": 2},
        {"num_kv_heads": 1, "position": "alibi"},
        {"attention": "latent", "kv_rank": 16, "rope_dim": 4, "q_rank": 12},
        {"rope_scaling": "yarn", "rope_factor": 4.0, "train_length": 8, "log_length_scaling": True},
    ],
    ids=["mha", "gqa", "mqa-alibi", "mla", "yarn-log-n"],
)
def test_gpt_takes_either_attention(config):
    """Greedy generation (prompt prefill, then cached steps) equals repeated argmax of forward."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(num_layers=2, dim=16, num_heads=4, **config)).double().eval()
    prompt = torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(2))
    sequence = prompt
    for _ in range(4):
        sequence = torch.cat([sequence, model(sequence)[:, -1:].argmax(-1)], 1)
    assert torch.equal(model.generate(prompt, 4, top_k=1), sequence)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(prompt), model(prompt))


def reference_gpt(state: dict, config: GPTConfig, idx: torch.Tensor) -> torch.Tensor:
    """The GPT of before issue 28 written out from a state dict of its keys (``blocks.i.qkv``)."""
    x = state["embed.weight"][idx]
    h = config.num_heads
    for i in range(config.num_layers):
        p = {
            name[len(f"blocks.{i}.") :]: w
            for name, w in state.items()
            if name.startswith(f"blocks.{i}.")
        }
        a = F.layer_norm(x, (config.dim,), p["norm1.weight"], p["norm1.bias"])
        q, k, v = (a @ p["qkv.weight"].T).view(*a.shape[:2], 3, h, -1).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, 0, config.rope_theta), rotary(k, 0, config.rope_theta)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + y.transpose(1, 2).flatten(-2) @ p["proj.weight"].T
        a = F.layer_norm(x, (config.dim,), p["norm2.weight"], p["norm2.bias"])
        x = x + F.gelu(a @ p["fc.weight"].T) @ p["fc_out.weight"].T
    x = F.layer_norm(x, (config.dim,), state["norm.weight"], state["norm.bias"])
    return x @ state["embed.weight"].T


def test_gpt_default_unchanged_and_old_state_dicts_load():
    """A state dict with the keys of before (blocks.i.qkv, blocks.i.proj) loads into today's GPT,
    which computes what the GPT of before computed from it, to the last bit."""
    config = GPTConfig(num_layers=2, dim=32, num_heads=4)
    torch.manual_seed(0)
    model = GPT(config).double().eval()
    old = {name.replace("attention.", ""): w for name, w in model.state_dict().items()}
    assert "blocks.0.qkv.weight" in old
    fresh = GPT(config).double().eval()
    fresh.load_state_dict(old)
    idx = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(1))
    assert torch.equal(fresh(idx), model(idx))
    assert torch.equal(model(idx), reference_gpt(old, config, idx))


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="num_kv_heads"):
        CausalSelfAttention(DIM, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="num_heads"):
        CausalSelfAttention(30, 4)
    with pytest.raises(ValueError, match="head_size"):  # odd rotary width: 12 / 4 = 3
        CausalSelfAttention(12, 4)
    CausalSelfAttention(12, 4, position="alibi")  # no rotation, any width
    with pytest.raises(ValueError, match="rope_dim"):
        MultiHeadLatentAttention(DIM, HEADS, kv_rank=8, rope_dim=3)
    with pytest.raises(ValueError, match="head_size"):
        RotaryPosition(5)
    with pytest.raises(ValueError, match="position"):
        CausalSelfAttention(DIM, HEADS, position=RotaryPosition(4))
    with pytest.raises(ValueError, match="position"):
        CausalSelfAttention(DIM, HEADS, position=ALiBi(2))
    with pytest.raises(ValueError, match="position"):
        CausalSelfAttention(DIM, HEADS, position="learned")
    with pytest.raises(ValueError, match="train_length"):
        CausalSelfAttention(DIM, HEADS, log_length_scaling=True)
    with pytest.raises(ValueError, match="dropout"):
        CausalSelfAttention(DIM, HEADS, dropout=1.0)
    with pytest.raises(ValueError, match="max_length"):
        make("mha").empty_cache(2, 0)
    with pytest.raises(ValueError, match="x must have shape"):
        make("mha")(torch.randn(2, 5, DIM + 1, dtype=torch.float64))


def test_cache_errors_name_the_argument():
    mha, gqa, mla = make("mha"), make("gqa"), make("mla")
    x = torch.randn(2, 3, DIM, dtype=torch.float64)
    for layer, other in [(mha, gqa), (gqa, mla), (mla, mha)]:
        with pytest.raises(ValueError, match="cache .*another configuration"):
            layer(x, other.empty_cache(2, 8))
    with pytest.raises(ValueError, match="cache holds a batch of 1"):
        mha(x, mha.empty_cache(1, 8))
    cache = mha.empty_cache(2, 4)
    mha(x, cache)
    with pytest.raises(ValueError, match="max_length=4"):
        mha(x[:, :2], cache)
    with pytest.raises(ValueError, match="max_length=2"):
        mla(x, mla.empty_cache(2, 2))


GPT_CONFIG_ERRORS = {
    "num_kv_heads": dict(dim=32, num_heads=4, num_kv_heads=3),
    "rope_dim": dict(dim=32, num_heads=4, attention="latent", rope_dim=3),
    "kv_rank": dict(dim=32, num_heads=4, kv_rank=8),
    "rope_scaling": dict(rope_scaling="ntk", position="alibi"),
    "rope_scaling-unknown": dict(rope_scaling="cubic"),
    "position": dict(attention="delta", position="alibi"),
    "train_length": dict(rope_scaling="yarn", rope_factor=2.0),
    "rope_factor": dict(rope_scaling="linear", rope_factor=0.5),
    "rope_theta": dict(rope_theta=1.0),
}


@pytest.mark.parametrize("name", list(GPT_CONFIG_ERRORS))
def test_gpt_config_errors_name_the_argument(name):
    with pytest.raises(ValueError, match=name.split("-")[0]):
        GPTConfig(**GPT_CONFIG_ERRORS[name])


def test_gpt_step_position_must_follow_the_cache():
    model = GPT(GPTConfig(num_layers=1, dim=16, num_heads=2))
    logits, cache = model.prefill(torch.zeros(1, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="position=5"):
        model.step(torch.zeros(1, 1, dtype=torch.long), cache, 5)


def test_long_alibi_sequences_read_in_query_blocks():
    """ALiBi's bias (H x T x T) is materialised in blocks of queries past 2^24 entries: the first
    2000 outputs of 2100 tokens (read in blocks) equal the outputs of those 2000 tokens alone."""
    attention = CausalSelfAttention(16, 4, position="alibi", dtype=torch.float64).eval()
    x = torch.randn(1, 2100, 16, dtype=torch.float64)
    with torch.no_grad():
        long, short = attention(x)[0], attention(x[:, :2000])[0]
    tol = bound(2100)
    torch.testing.assert_close(long[:, :2000], short, rtol=tol, atol=tol)
