"""Merging models fine-tuned from one pretrained model: subspace merging on the Grassmannian,
the design notes' RGSP-TEFM, and the field's baselines.

All merges take ``nn.Module``\\ s or state dicts and return ``{name: merged tensor}`` for the
selected parameters (``include``); :func:`load_merged` copies them into a model whose other
parameters (its task head) stay.
"""

from ._state import load_merged
from .baselines import (
    dare_merge,
    fisher_merge,
    iso_c_merge,
    regmean_merge,
    task_arithmetic,
    ties_merge,
    tsv_merge,
    weight_average,
)
from .rebasin import permutation_align
from .rgsp_tefm import rgsp_tefm, rgsp_tefm_matrix
from .statistics import diagonal_fisher, input_grams
from .subspace import polar_factor, subspace_merge, subspace_merge_matrices

__all__ = [
    "subspace_merge",
    "subspace_merge_matrices",
    "polar_factor",
    "rgsp_tefm",
    "rgsp_tefm_matrix",
    "weight_average",
    "task_arithmetic",
    "ties_merge",
    "dare_merge",
    "tsv_merge",
    "iso_c_merge",
    "regmean_merge",
    "fisher_merge",
    "permutation_align",
    "input_grams",
    "diagonal_fisher",
    "load_merged",
]
