"""Neural-network layers acting on manifold-valued data.

* :mod:`.grassmann`: Grassmann network primitives (FRMap, ReOrth, ProjMap, ProjPooling,
  KarcherPool, OrthMap, SubspaceEmbedding);
* :mod:`.attention` and :mod:`.manifold_linear`: geodesic-distance attention and its
  manifold-preserving query/key/value maps, on any :class:`~manifoldnn.manifolds.ManifoldGeometry`,
  called as :class:`torch.nn.MultiheadAttention` is;
* :mod:`.favor`: the same attention in linear time with FAVOR+ / FAVOR++ positive random features;
* :mod:`.transformer_vq`, :mod:`.random_feature_attention`, :mod:`.relu_squared`: causal
  token self-attention in linear time (Transformer-VQ, FAVOR+ / FAVOR++) and with GAU's squared-ReLU
  normalisation, each with a decoding cache;
* :mod:`.spd`: SPD matrix network layers (BiMap, ReEig, LogEig, ExpEig, CovPool, SPDBatchNorm);
* :mod:`.fusion`: the orthogonal direct-sum fusion of two modalities;
* :mod:`.hyperbolic`: the Poincaré fully connected layer, hyperbolic multinomial logistic
  regression and the Lorentz linear layer;
* :mod:`.causal_attention` and :mod:`.positions`: causal self-attention for language models
  (MHA, GQA, MQA, DeepSeek-V2's latent attention) with a key/value cache, and the token positions
  (RoPE with its context-extension scalings, ALiBi, none);
* :mod:`.hyper_connections`: hyper-connections, residual streams mixed on the Birkhoff polytope
  (mHC) or the orthogonal group, and DeepNorm's scales.

Whole networks (GrNet, MultiViewGrassmannNet) are in :mod:`manifoldnn.models`, the fairness metric
in :mod:`manifoldnn.fairness`, orthonormal-frame parametrisations in
:mod:`manifoldnn.parametrizations`.
"""

from . import (
    attention,
    causal_attention,
    favor,
    fusion,
    grassmann,
    hyper_connections,
    hyperbolic,
    manifold_linear,
    positions,
    random_feature_attention,
    relu_squared,
    spd,
    transformer_vq,
)
from .attention import *  # noqa: F403
from .causal_attention import *  # noqa: F403
from .favor import *  # noqa: F403
from .fusion import *  # noqa: F403
from .grassmann import *  # noqa: F403
from .hyper_connections import *  # noqa: F403
from .hyperbolic import *  # noqa: F403
from .manifold_linear import *  # noqa: F403
from .positions import *  # noqa: F403
from .random_feature_attention import *  # noqa: F403
from .relu_squared import *  # noqa: F403
from .spd import *  # noqa: F403
from .transformer_vq import *  # noqa: F403

__all__ = [
    *grassmann.__all__,
    *attention.__all__,
    *manifold_linear.__all__,
    *favor.__all__,
    *fusion.__all__,
    *spd.__all__,
    *hyperbolic.__all__,
    *transformer_vq.__all__,
    *random_feature_attention.__all__,
    *relu_squared.__all__,
    *causal_attention.__all__,
    *positions.__all__,
    *hyper_connections.__all__,
]
