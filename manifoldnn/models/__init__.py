"""Whole networks built from manifoldnn's layers, and sequence models.

* Grassmann networks: :class:`GrNet`, :class:`ProjectorClassifier`, :class:`MultiViewGrassmannNet`;
* SPD matrix networks: :class:`SPDNet` (with optional Riemannian batch normalisation);
* linear-recurrent sequence models: :class:`BDH` (BDH-GPU, the Dragon Hatchling) and the building
  blocks :func:`causal_linear_attention` and :func:`delta_rule`; :class:`GPT`, the softmax
  baseline; :class:`FusedStreamLM`, a causal Transformer over a fused text-and-codec stream,
  and its tokeniser :class:`ResidualVectorQuantizer`. (Linear-time geodesic attention with
  random features is :func:`manifoldnn.layers.favor_attention`.)
"""

from . import bdh, fused_lm, gpt, grnet, linear_attention, multiview, rope, spdnet
from .bdh import *  # noqa: F403
from .fused_lm import *  # noqa: F403
from .gpt import *  # noqa: F403
from .grnet import *  # noqa: F403
from .linear_attention import *  # noqa: F403
from .multiview import *  # noqa: F403
from .rope import *  # noqa: F403
from .spdnet import *  # noqa: F403

__all__ = [
    *grnet.__all__,
    *multiview.__all__,
    *bdh.__all__,
    *gpt.__all__,
    *fused_lm.__all__,
    *linear_attention.__all__,
    *rope.__all__,
    *spdnet.__all__,
]

# rotary moved to manifoldnn.layers (issue 28); the old name warns for one release
__getattr__ = rope.__getattr__
