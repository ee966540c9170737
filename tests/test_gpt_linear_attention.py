"""GPT with the linear-time approximations of softmax attention (Transformer-VQ, FAVOR+, FAVOR++)
and ReLU² attention: cached token-by-token decoding equals the full forward, no token sees a later
one, the model compiles without graph breaks, Transformer-VQ's commitment loss reaches
``GPT.auxiliary_loss``, and the configuration errors name their field.

Tolerances: the cached and full forms sum the same products in another order (blocks, chunks or
one token at a time), so they agree to a few ulps per term of the longest sum; the logits pass
through ``num_layers`` such layers and the tied output map, ``n eps`` with ``n`` the widest
contraction (the vocabulary of 256).
"""

from __future__ import annotations

import pytest
import torch

from manifoldnn.models import GPT, GPTConfig

EPS64 = torch.finfo(torch.float64).eps
OPTIONS = {
    "vq": {"codebook_size": 8},
    "vq_rope": {"codebook_size": 8, "position": "rope"},
    "favor": {"num_features": 16},
    "favor++": {"num_features": 16},
    "relu2": {},
}


def make(name: str, device="cpu") -> GPT:
    torch.manual_seed(0)
    options = {"position": "none", **OPTIONS[name]}
    config = GPTConfig(
        num_layers=2, dim=16, num_heads=4, attention=name.split("_")[0], chunk_size=4, **options
    )
    model = GPT(config, device=device, dtype=torch.float64)
    # a few training forwards move Transformer-VQ's codebook and FAVOR++'s running statistic
    model.train()
    ids = torch.randint(0, 256, (2, 13), generator=torch.Generator().manual_seed(3))
    for _ in range(2):
        model(ids.to(device))
    return model.eval()


def tokens(length: int, device) -> torch.Tensor:
    return torch.randint(0, 256, (2, length), generator=torch.Generator().manual_seed(1)).to(device)


@pytest.mark.parametrize("attention", list(OPTIONS))
def test_cached_decoding_equals_the_full_forward(attention, device):
    model = make(attention, device)
    idx = tokens(11, device)
    full = model(idx)
    logits, cache = model.prefill(idx[:, :3], 8)
    steps = [logits]
    for position in range(3, 11):
        logits, cache = model.step(idx[:, position : position + 1], cache, position)
        steps.append(logits)
    tolerance = 8 * 256 * EPS64
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 2:], rtol=0, atol=tolerance)


@pytest.mark.parametrize("attention", list(OPTIONS))
def test_generate_is_repeated_argmax(attention):
    model = make(attention)
    prompt = tokens(5, "cpu")
    sequence = prompt
    for _ in range(4):
        sequence = torch.cat([sequence, model(sequence)[:, -1:].argmax(-1)], 1)
    assert torch.equal(model.generate(prompt, 4, top_k=1), sequence)


@pytest.mark.parametrize("attention", list(OPTIONS))
def test_no_leak_from_later_tokens(attention, device):
    model = make(attention, device)
    idx = tokens(12, device)
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 256
    assert torch.equal(model(idx)[:, :8], model(changed)[:, :8])


@pytest.mark.parametrize("attention", list(OPTIONS))
def test_compiles_without_graph_breaks(attention):
    model = make(attention).float()
    idx = tokens(10, "cpu")
    torch._dynamo.reset()
    assert torch._dynamo.explain(model)(idx).graph_break_count == 0
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(idx), model(idx))


def test_commitment_loss_reaches_the_auxiliary_loss():
    model = make("vq").train()
    model(tokens(9, "cpu"))
    loss = model.auxiliary_loss()
    expected = sum(block.attention.commitment_loss for block in model.blocks)
    assert loss.requires_grad and float(loss.detach()) > 0
    torch.testing.assert_close(loss, expected)
    loss.backward()  # the keys learn from it
    assert model.blocks[0].attention.qkv.weight.grad.abs().sum() > 0
    for attention in ("favor", "relu2"):
        assert float(make(attention).auxiliary_loss()) == 0.0


CONFIG_ERRORS = {
    "position": dict(attention="vq", position="alibi"),
    "position-favor": dict(attention="favor"),
    "rope_scaling": dict(attention="vq", rope_scaling="ntk", rope_factor=2.0, train_length=8),
    "log_length_scaling": dict(
        attention="favor", position="none", log_length_scaling=True, train_length=8
    ),
    "codebook_size": dict(attention="favor", position="none", codebook_size=16),
    "codebook_size-positive": dict(attention="vq", position="none", codebook_size=0),
    "num_features": dict(attention="relu2", position="none", num_features=16),
    "num_features-positive": dict(attention="favor++", position="none", num_features=0),
    "chunk_size": dict(attention="vq", position="none", chunk_size=0),
}


@pytest.mark.parametrize("name", list(CONFIG_ERRORS))
def test_config_errors_name_the_field(name):
    with pytest.raises(ValueError, match=name.split("-")[0]):
        GPTConfig(dim=32, num_heads=4, **CONFIG_ERRORS[name])
