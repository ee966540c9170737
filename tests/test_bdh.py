"""BDH-GPU: equal outputs across execution modes, causality, generation, bad input."""

import pytest
import torch

from manifoldnn.models import BDH, GPT, BDHConfig, GPTConfig
from manifoldnn.models.linear_attention import MODES

DTYPES = [torch.float32, torch.float64]
# the tolerances; logits are O(1) LayerNorm-ed features times 0.02-scale weights
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}

VARIANTS = {
    "shared": {},
    "unshared": {"shared_layers": False},
    "decay": {"decay": True},
    "delta": {"state_update": "delta", "shared_layers": False},
}


def _tiny(dtype, seed=0, device="cpu", **overrides):
    """Initialised on the CPU (the same weights on every device), then moved to ``device``."""
    torch.manual_seed(seed)
    config = BDHConfig(num_layers=3, dim=16, num_heads=2, num_neurons=32, chunk_size=4, **overrides)
    model = BDH(config, dtype=dtype).eval()
    if config.decay:  # strong, distinct decays so that a wrong power of lambda shows
        with torch.no_grad():
            model.layers[0].log_decay_logit.copy_(torch.tensor([0.3, -1.0]))
    return model.to(device)


def _ids(shape, seed, high=256, device="cpu"):
    """Token ids drawn on the CPU (the same on every device), then moved to ``device``."""
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed)).to(device)


def test_reference_configuration_has_the_papers_size():
    """25.3M parameters: 3 H D N for the encoders and decoder plus the embedding and the head."""
    config = BDHConfig()
    expected = 3 * config.num_heads * config.dim * config.num_neurons + 2 * 256 * config.dim
    assert sum(p.numel() for p in BDH(config, device="meta").parameters()) == expected == 25_296_896


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_modes_agree(dtype, variant, device):
    model = _tiny(dtype, device=device, **VARIANTS[variant])
    idx = _ids((2, 23), 1, device=device)  # odd T
    outputs = {mode: model(idx, mode=mode) for mode in MODES}
    assert outputs["parallel"].shape == (2, 23, 256)
    for mode in ("chunked", "recurrent"):
        torch.testing.assert_close(outputs[mode], outputs["parallel"], rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_causal(variant, device):
    model = _tiny(torch.float64, device=device, **VARIANTS[variant])
    idx = _ids((1, 19), 2, device=device)
    changed = idx.clone()
    t = 11
    changed[0, t] = (idx[0, t] + 1) % 256
    for mode in MODES:
        a, b = model(idx, mode=mode), model(changed, mode=mode)
        assert torch.equal(a[:, :t], b[:, :t]), mode
        assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :]), mode


def _reference_forward(model, idx):
    """The architecture written out densely from the paper's description, independent of the
    library's attention and RoPE code: scores (Q K^T).tril(-1), no softmax, Q = K = RoPE(xs)."""
    config = model.config
    layer = model.layers[0]
    d, n = config.dim, config.num_neurons
    length = idx.shape[1]
    ln = lambda t: torch.nn.functional.layer_norm(t, (d,))  # noqa: E731
    j = torch.arange(n // 2, dtype=torch.float64, device=idx.device)
    positions = torch.arange(length, dtype=torch.float64, device=idx.device)
    angle = positions[:, None] * config.rope_theta ** (-2 * j / n)
    cos, sin = torch.cos(angle), torch.sin(angle)

    def rope(t):
        even, odd = t[..., 0::2], t[..., 1::2]
        out = torch.empty_like(t)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    x = ln(model.embed.weight[idx])  # (B, T, D)
    for _ in range(config.num_layers):
        xs = torch.relu(torch.einsum("btd,hdn->bhtn", x, layer.encoder))
        r = rope(xs)
        scores = torch.einsum("bhtn,bhsn->bhts", r, r).tril(-1)
        a = ln(torch.einsum("bhts,bsd->bhtd", scores, x))
        ys = torch.relu(torch.einsum("bhtd,hdn->bhtn", a, layer.encoder_v))
        sparse = (xs * ys).permute(0, 2, 1, 3).reshape(x.shape[0], length, -1)
        x = ln(x + ln(sparse @ layer.decoder))
    return x @ model.lm_head


def test_parallel_matches_a_dense_reference(device):
    model = _tiny(torch.float64, device=device)
    idx = _ids((2, 17), 6, device=device)
    with torch.no_grad():
        reference = _reference_forward(model, idx)
        for mode in MODES:
            torch.testing.assert_close(model(idx, mode=mode), reference, rtol=0, atol=1e-10)


def test_unbatched_input_and_active_fraction(device):
    model = _tiny(torch.float64, device=device)
    idx = torch.randint(0, 256, (15,), device=device)
    logits, fraction = model(idx, return_active_fraction=True)
    assert logits.shape == (15, 256)
    torch.testing.assert_close(logits, model(idx[None])[0])
    assert 0.0 < float(fraction) < 1.0  # ReLU of random projections: about half non-zero


def test_gradcheck_chunked_tiny(device):
    """Gradients of the chunked model with respect to each weight, in float64."""
    config = BDHConfig(num_layers=2, dim=4, num_heads=2, num_neurons=4, chunk_size=4, vocab_size=8)
    torch.manual_seed(0)
    small = BDH(config, dtype=torch.float64).eval().to(device)
    idx = _ids((1, 6), 3, high=8, device=device)
    base = dict(small.named_parameters())
    for name in ("layers.0.encoder", "layers.0.encoder_v", "layers.0.decoder"):

        def f(weight, name=name):
            return torch.func.functional_call(small, {**base, name: weight}, (idx,))

        # scaled up from the 0.02 init so that finite differences see a non-trivial function
        weight = (50.0 * base[name].detach()).requires_grad_()
        assert torch.autograd.gradcheck(f, (weight,))


def _greedy_by_forward(model, prompt, steps):
    """The reference of greedy decoding: the whole sequence re-run, its last argmax appended."""
    sequence = prompt
    for _ in range(steps):
        sequence = torch.cat([sequence, model(sequence)[:, -1:].argmax(-1)], dim=1)
    return sequence


def test_generate_greedy_matches_forward(device):
    """top_k = 1 generation (chunked prefill, then recurrent steps) equals repeated argmax."""
    model = _tiny(torch.float64, device=device)
    prompt = _ids((2, 9), 4, device=device)
    out = model.generate(prompt, 6, top_k=1, prefill_segment=4)
    assert torch.equal(out, _greedy_by_forward(model, prompt, 6))


@pytest.mark.parametrize("attention", ["softmax", "delta"])
def test_gpt_generate_greedy_matches_forward(attention, device):
    torch.manual_seed(0)
    model = GPT(GPTConfig(num_layers=2, dim=16, num_heads=2, attention=attention, chunk_size=3))
    model = model.double().eval().to(device)
    prompt = _ids((2, 7), 5, device=device)
    out = model.generate(prompt, 5, top_k=1, prefill_segment=3)
    assert torch.equal(out, _greedy_by_forward(model, prompt, 5))


def test_gpt_delta_modes_agree(device):
    torch.manual_seed(0)
    model = GPT(GPTConfig(num_layers=2, dim=16, num_heads=2, attention="delta", chunk_size=4))
    model = model.double().eval().to(device)
    idx = torch.randint(0, 256, (2, 13), device=device)
    reference = model(idx, mode="recurrent")
    for mode in ("parallel", "chunked"):
        torch.testing.assert_close(model(idx, mode=mode), reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("bad", [-1, 256, 1000])
def test_token_ids_outside_the_vocabulary(bad):
    model = _tiny(torch.float32)
    idx = torch.tensor([[1, 2, bad]])
    with pytest.raises(ValueError, match="vocabulary"):
        model(idx)
    with pytest.raises(ValueError, match="vocabulary"):
        model.generate(idx, 2)
    with pytest.raises(ValueError, match="vocabulary"):
        GPT(GPTConfig(num_layers=1, dim=8, num_heads=2))(idx)


def test_bad_arguments():
    model = _tiny(torch.float32)
    idx = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="chunk_size"):
        BDHConfig(chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        BDHConfig(chunk_size=-4)
    with pytest.raises(ValueError, match="mode"):
        model(idx, mode="fast")
    with pytest.raises(ValueError, match="integer"):
        model(idx.float())
    with pytest.raises(ValueError, match="state_update"):
        BDHConfig(state_update="oja")
    with pytest.raises(ValueError, match="decay"):
        BDHConfig(decay=True, state_update="delta")
    with pytest.raises(ValueError, match="num_neurons"):
        BDHConfig(num_neurons=33)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(idx, 2, temperature=0.0)
    with pytest.raises(ValueError, match="prefill_segment"):
        model.generate(idx, 2, prefill_segment=0)
    with pytest.raises(ValueError, match="prompt"):
        model.generate(idx[:, :0], 2)
    with pytest.raises(ValueError, match="num_heads"):
        GPTConfig(dim=30, num_heads=4)


def test_long_context_beyond_any_table(device):
    """RoPE angles are computed per position (no table), so positions past 2^16 work: the model
    sees relative positions only, so steps from position 100,000 give the logits of positions 0..4
    (angle rounding about position * eps = 2e-11 rad in float64)."""
    model = _tiny(torch.float64, device=device)
    idx = torch.randint(0, 256, (1, 5), device=device)
    state, far = None, []
    for t in range(idx.shape[1]):
        logits, state = model.step(idx[:, t : t + 1], state, 100_000 + t)
        far.append(logits)
    logits_far = torch.stack(far, dim=1)
    assert torch.isfinite(logits_far).all()
    torch.testing.assert_close(logits_far, model(idx, mode="recurrent"), rtol=0, atol=1e-8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_modes_agree():
    model = _tiny(torch.float32).cuda()
    idx = torch.randint(0, 256, (2, 23), device="cuda")
    torch.testing.assert_close(
        model(idx, mode="chunked"), model(idx, mode="parallel"), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("mode", MODES)
def test_empty_sequence(mode, device):
    model = _tiny(torch.float32, device=device)
    idx = torch.zeros(2, 0, dtype=torch.long, device=device)
    assert model(idx, mode=mode).shape == (2, 0, 256)


@pytest.mark.parametrize("variant", ["shared", "delta"])
def test_compiles_without_graph_breaks(variant, device):
    """fullgraph=True fails on any graph break (the token check is skipped while compiling)."""
    model = _tiny(torch.float32, device=device, **VARIANTS[variant])
    idx = torch.randint(0, 256, (2, 10), device=device)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(idx, mode="chunked"), model(idx, mode="chunked"))


def test_renamed_config_fields_warn_and_still_work():
    with pytest.warns(FutureWarning, match="renamed"):
        config = GPTConfig(n_layer=1, n_embd=8, n_head=2)
    assert (config.num_layers, config.dim, config.num_heads) == (1, 8, 2)
    with pytest.warns(FutureWarning, match="GPTConfig.dim"):
        assert config.n_embd == 8
    with pytest.warns(FutureWarning, match="num_neurons"):
        bdh = BDHConfig(n_neuron=16)
    assert bdh.num_neurons == 16
