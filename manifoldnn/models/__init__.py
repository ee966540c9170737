"""Whole networks built from manifoldnn's layers, and sequence models.

* Grassmann networks: :class:`GrNet`, :class:`ProjectorClassifier`, :class:`MultiViewGrassmannNet`;
* SPD matrix networks: :class:`SPDNet` (with optional Riemannian batch normalisation);
* linear-recurrent sequence models: :class:`BDH` (BDH-GPU, the Dragon Hatchling) and the building
  blocks :func:`causal_linear_attention` and :func:`delta_rule`; :class:`GPT`, the softmax
  baseline; :class:`FusedStreamLM`, a causal Transformer over a fused text-and-codec stream,
  and its tokeniser :class:`ResidualVectorQuantizer`. (Linear-time geodesic attention with
  random features is :func:`manifoldnn.layers.favor_attention`.)
"""

from .bdh import BDH, BDHConfig
from .fused_lm import FUSIONS, FusedStreamLM, ResidualVectorQuantizer
from .gpt import GPT, GPTConfig
from .grnet import GrNet, ProjectorClassifier
from .linear_attention import causal_linear_attention, delta_rule
from .multiview import MultiViewGrassmannNet, MultiViewOutput, fuse_subspaces
from .rope import rotary
from .spdnet import SPDNet

__all__ = [
    "BDH",
    "BDHConfig",
    "GPT",
    "GPTConfig",
    "FUSIONS",
    "FusedStreamLM",
    "ResidualVectorQuantizer",
    "causal_linear_attention",
    "delta_rule",
    "rotary",
    "GrNet",
    "ProjectorClassifier",
    "MultiViewGrassmannNet",
    "MultiViewOutput",
    "fuse_subspaces",
    "SPDNet",
]
