"""Merging models fine-tuned from one pretrained model: subspace merging on the Grassmannian,
the design notes' RGSP-TEFM, and the field's baselines.

All merges take ``nn.Module``\\ s or state dicts and return ``{name: merged tensor}`` for the
selected parameters (``include``); :func:`load_merged` copies them into a model whose other
parameters (its task head) stay.
"""

# the modules under private names: ``rgsp_tefm`` is also the name of a function
from . import baselines as _baselines
from . import rebasin as _rebasin
from . import rgsp_tefm as _rgsp_tefm
from . import statistics as _statistics
from . import subspace as _subspace
from ._state import load_merged
from .baselines import *  # noqa: F403
from .rebasin import *  # noqa: F403
from .rgsp_tefm import *  # noqa: F403
from .statistics import *  # noqa: F403
from .subspace import *  # noqa: F403

__all__ = [
    *_subspace.__all__,
    *_rgsp_tefm.__all__,
    *_baselines.__all__,
    *_rebasin.__all__,
    *_statistics.__all__,
    "load_merged",
]
