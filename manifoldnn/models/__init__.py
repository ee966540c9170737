"""Sequence models: BDH-GPU (the Dragon Hatchling), a GPT baseline, and causal linear attention."""

from manifoldnn.models.bdh import BDH, BDHConfig
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
    "rotary",
]
