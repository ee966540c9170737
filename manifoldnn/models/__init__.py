"""Sequence models: BDH-GPU (the Dragon Hatchling), a GPT baseline, causal linear attention, FAVOR+."""

from manifoldnn.models.bdh import BDH, BDHConfig
from manifoldnn.models.favor import (
    favor_attention,
    orthogonal_random_features,
    positive_random_features,
)
from manifoldnn.models.gpt import GPT, GPTConfig
from manifoldnn.models.linear_attention import causal_linear_attention, delta_rule
from manifoldnn.models.rope import rotary

__all__ = [
    "BDH",
    "BDHConfig",
    "GPT",
    "GPTConfig",
    "causal_linear_attention",
    "delta_rule",
    "favor_attention",
    "orthogonal_random_features",
    "positive_random_features",
    "rotary",
]
