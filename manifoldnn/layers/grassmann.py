r"""Layers of Grassmann networks (GrNet, Huang, Wu & Van Gool, AAAI 2018, "Building deep networks on
Grassmann manifolds", Sec. 3; layer names as in the paper).

A point of the Grassmannian :math:`\mathrm{Gr}(n, p)` is stored as an orthonormal basis
:math:`Y \in \mathbb{R}^{n \times p}`, :math:`Y^\top Y = I_p`, or as its projector :math:`Y Y^\top`.

Channel convention (shared by every layer here): a tensor of bases has shape ``(..., n, p)``; a
multi-channel tensor has its channel axis at dimension ``-3``: ``(..., C, n, p)`` for bases and
``(..., C, n, n)`` for projectors.  ``...`` are any batch dimensions; they broadcast.

* ``FRMap(in_size, out_size, channels=1)``: no channel axis,
  ``(..., in_size, p) -> (..., out_size, p)``.
* ``FRMap(in_size, out_size, channels=C)`` with ``C > 1``: ``(..., C or 1, in_size, p) ->
  (..., C, out_size, p)``; a size-1 channel axis is broadcast, so ``frmap(Y.unsqueeze(-3))`` maps one
  basis through the C weights (the multi-channel first layer of GrNet).
* ``ReOrth``, ``ProjMap``, ``OrthMap``, ``SubspaceEmbedding`` act on the last two dimensions and
  keep every leading dimension (channels included).
* ``ProjPooling("across")`` and ``KarcherPool`` reduce the channel axis ``-3``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..linalg import eigh_top, newton_schulz_step, qr_positive
from ..manifolds import Grassmann, karcher_mean
from ..parametrizations import ConstrainedModule, reset_stiefel_, stiefel_parameter
from ..validation import (
    check_positive_int,
    check_positive_ints,
    renamed_arguments,
    renamed_attribute,
)

__all__ = [
    "FRMap",
    "ReOrth",
    "ProjMap",
    "ProjPooling",
    "KarcherPool",
    "OrthMap",
    "SubspaceEmbedding",
]


def _check_matrix(x: torch.Tensor, name: str, layer: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{layer}: {name} must be a tensor (..., rows, cols), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{layer}: {name} must be floating point, got {x.dtype}")


def _check_square(x: torch.Tensor, layer: str) -> None:
    _check_matrix(x, "input", layer)
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{layer}: input must be square (..., n, n), got {tuple(x.shape)}")


class FRMap(ConstrainedModule):
    r"""Full-rank mapping :math:`Y \mapsto W Y` with :math:`W W^\top = I`, one weight per channel
    (GrNet, Huang, Wu & Van Gool 2018, FRMap layer).

    The weight is stored as ``weight`` of shape ``(channels, in_size, out_size)``: a
    :class:`geoopt.ManifoldParameter` on :class:`geoopt.EuclideanStiefel`, i.e. :math:`W^\top` has
    orthonormal columns, so :math:`W = \text{weight}^\top` has orthonormal rows and
    :class:`geoopt.optim.RiemannianAdam` / ``RiemannianSGD`` keep it exactly on the manifold (the
    original GrNet updated W in Euclidean space and let it drift). Rows orthonormal means W is
    full rank, so :math:`W Y` has rank p and ``ReOrth`` after it is well defined. After
    ``.to(dtype)`` / ``.double()`` the weight is re-projected onto the Stiefel manifold in the new
    dtype (:class:`~manifoldnn.parametrizations.ConstrainedModule`).

    Args:
        in_size: n, the rows of the input bases.
        out_size: the rows of the output bases (``<= in_size``: W needs orthonormal rows).
        channels: the number C of weights. Default: ``1``.
        device: of the weight. Default: PyTorch's default.
        dtype: of the weight. Default: PyTorch's default.

    Shape:
        - ``channels == 1``: ``(..., in_size, p) -> (..., out_size, p)`` (no channel axis).
        - ``channels == C > 1``: ``(..., C, in_size, p)`` or ``(..., 1, in_size, p)`` (broadcast)
          ``-> (..., C, out_size, p)``; channel c is multiplied by ``weight[c].T``.

        ``p <= out_size`` (otherwise the output would not have full column rank).

    Examples::

        >>> from manifoldnn.manifolds import Grassmann
        >>> FRMap(8, 5, channels=3)(Grassmann().random(2, 1, 8, 2)).shape
        torch.Size([2, 3, 5, 2])
    """

    in_dim = renamed_attribute("in_dim", "in_size")
    out_dim = renamed_attribute("out_dim", "out_size")

    @renamed_arguments(in_dim="in_size", out_dim="out_size")
    def __init__(
        self,
        in_size: int,
        out_size: int,
        channels: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_ints(in_size=in_size, out_size=out_size, channels=channels)
        if out_size > in_size:
            raise ValueError(
                f"out_size must be <= in_size for W (out_size, in_size) to have orthonormal rows, "
                f"got out_size={out_size} > in_size={in_size}"
            )
        self.in_size = in_size
        self.out_size = out_size
        self.channels = channels
        self.weight = stiefel_parameter(channels, in_size, out_size, device=device, dtype=dtype)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random orthonormal W (sign-fixed QR of a standard normal matrix: Haar distributed)."""
        reset_stiefel_(self.weight)

    @property
    def matrix(self) -> torch.Tensor:
        """W of shape ``(channels, out_size, in_size)`` (orthonormal rows)."""
        return self.weight.transpose(-1, -2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_matrix(x, "input", "FRMap")
        if x.shape[-2] != self.in_size:
            raise ValueError(
                f"FRMap expects (..., {'C, ' if self.channels > 1 else ''}in_size={self.in_size}, "
                f"p), got shape {tuple(x.shape)}"
            )
        if x.shape[-1] > self.out_size:
            raise ValueError(
                f"FRMap: p = {x.shape[-1]} columns cannot stay independent in out_size = "
                f"{self.out_size} rows (need p <= out_size)"
            )
        if self.channels == 1:
            return self.matrix[0] @ x
        if x.dim() < 3 or x.shape[-3] not in (1, self.channels):
            raise ValueError(
                f"FRMap with channels={self.channels} expects the channel axis at dim -3 with size "
                f"{self.channels} or 1: (..., C, in_size, p), got shape {tuple(x.shape)}"
            )
        return self.matrix @ x

    def extra_repr(self) -> str:
        return f"in_size={self.in_size}, out_size={self.out_size}, channels={self.channels}"


class ReOrth(nn.Module):
    r"""QR re-orthonormalisation :math:`X = Q R \mapsto Q` with :math:`\operatorname{diag}(R) > 0`
    (GrNet, Huang et al. 2018, ReOrth layer).

    ``(..., n, p) -> (..., n, p)`` with ``p <= n`` and X of full column rank.  The positive-diagonal
    convention makes Q a function of X (Gram-Schmidt), so an input with orthonormal columns comes
    back unchanged; the backward is PyTorch's QR backward (Walter & Lehmann 2018, "Algorithmic
    differentiation of linear algebra functions with application in optimum experimental design",
    reduced QR of a tall matrix) times a locally constant sign.  GrNet's released code used a
    hand-written backward; here autograd supplies it and ``gradcheck`` checks it.

    Args:
        validate: in eager mode, raise a ``ValueError`` when an input is numerically rank-deficient
            (smallest ``|R_kk|`` at most ``n eps`` times the largest): Q is then not a function of X
            and the QR backward divides by that ``R_kk``. Default: ``True``.

    Shape:
        ``(..., n, p) -> (..., n, p)``.

    Examples::

        >>> y = ReOrth()(torch.randn(4, 6, 2))
        >>> torch.allclose(y.transpose(-1, -2) @ y, torch.eye(2).expand(4, 2, 2), atol=1e-6)
        True
    """

    def __init__(self, *, validate: bool = True) -> None:
        super().__init__()
        self.validate = validate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_matrix(x, "input", "ReOrth")
        if x.shape[-1] > x.shape[-2]:
            raise ValueError(
                f"ReOrth needs p <= n in (..., n, p), got n={x.shape[-2]}, p={x.shape[-1]}"
            )
        return qr_positive(x, check_rank=self.validate)


class ProjMap(nn.Module):
    r"""Projection map :math:`Y \mapsto Y Y^\top` (GrNet, Huang et al. 2018, ProjMap layer).

    ``(..., n, p) -> (..., n, n)``.  Invariant to the choice of basis of the subspace, and an
    isometric embedding of :math:`\mathrm{Gr}(n, p)` into symmetric matrices up to a factor
    :math:`\sqrt 2` (projection F-norm distance, Edelman, Arias, Smith 1998, "The geometry of algorithms with
    orthogonality constraints", table of Grassmann distances).

    Shape:
        ``(..., n, p) -> (..., n, n)``.

    Examples::

        >>> from manifoldnn.manifolds import Grassmann
        >>> ProjMap()(Grassmann().random(4, 6, 2)).shape
        torch.Size([4, 6, 6])
    """

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        _check_matrix(y, "input", "ProjMap")
        if y.shape[-1] > y.shape[-2]:
            raise ValueError(
                f"ProjMap needs a basis (..., n, p) with p <= n, got shape {tuple(y.shape)}"
            )
        return y @ y.transpose(-1, -2)


class ProjPooling(nn.Module):
    r"""Mean pooling of projectors (GrNet, Huang et al. 2018, ProjPooling layer).

    * ``mode="across"``: average of the projectors of ``kernel_size`` neighbouring channels,
      ``(..., C, n, n) -> (..., C / kernel_size, n, n)``; ``kernel_size=None`` averages all channels
      and drops the channel axis, ``(..., C, n, n) -> (..., n, n)``.  The mean of projectors is the
      extrinsic (projection-metric) mean of the subspaces before re-projection by ``OrthMap``.
    * ``mode="within"``: average over ``kernel_size x kernel_size`` blocks of each projector,
      ``(..., n, n) -> (..., n / k, n / k)``.  For :math:`P = Y Y^\top` this equals
      :math:`\tilde Y \tilde Y^\top` where :math:`\tilde Y` averages groups of k neighbouring rows of
      Y (pooling over neighbouring rows).

    The output is symmetric positive semi-definite but no longer a projector: follow it with
    ``OrthMap(rank)`` to return to the Grassmannian.

    Args:
        mode: ``"across"`` or ``"within"``. Default: ``"across"``.
        kernel_size: the number of channels (``"across"``) or the block size (``"within"``)
            averaged; ``None`` averages all channels (``"across"`` only). Default: ``None``.

    Shape:
        ``"across"``: ``(..., C, n, n) -> (..., C / kernel_size, n, n)`` (or ``(..., n, n)``);
        ``"within"``: ``(..., n, n) -> (..., n / kernel_size, n / kernel_size)``.

    Examples::

        >>> p = torch.eye(6).expand(2, 4, 6, 6)
        >>> ProjPooling("across", kernel_size=2)(p).shape
        torch.Size([2, 2, 6, 6])
    """

    def __init__(self, mode: str = "across", kernel_size: int | None = None) -> None:
        super().__init__()
        if mode not in ("across", "within"):
            raise ValueError(f"ProjPooling mode must be 'across' or 'within', got {mode!r}")
        if kernel_size is not None and kernel_size < 1:
            raise ValueError(f"ProjPooling kernel_size must be >= 1, got {kernel_size}")
        if mode == "within" and kernel_size is None:
            raise ValueError("ProjPooling(mode='within') needs a kernel_size")
        self.mode = mode
        self.kernel_size = kernel_size

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        _check_square(p, "ProjPooling")
        k = self.kernel_size
        if self.mode == "across":
            if p.dim() < 3:
                raise ValueError(
                    f"ProjPooling('across') needs a channel axis (..., C, n, n), got {tuple(p.shape)}"
                )
            channels = p.shape[-3]
            if k is None:
                return p.mean(dim=-3)
            if channels % k:
                raise ValueError(
                    f"ProjPooling('across'): {channels} channels are not divisible by "
                    f"kernel_size={k}"
                )
            grouped = p.reshape(p.shape[:-3] + (channels // k, k) + p.shape[-2:])
            return grouped.mean(dim=-3)
        n = p.shape[-1]
        if n % k:
            raise ValueError(f"ProjPooling('within'): n={n} is not divisible by kernel_size={k}")
        blocks = p.reshape(p.shape[:-2] + (n // k, k, n // k, k))
        return blocks.mean(dim=(-3, -1))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, kernel_size={self.kernel_size}"


class KarcherPool(nn.Module):
    r"""Karcher (Fréchet) mean of groups of subspaces on the Grassmannian (GrNet's pooling with the
    intrinsic mean, Huang et al. 2018, ProjPooling discussion; Karcher 1977).

    Pools dimension ``dim`` (default ``-3``, the channel axis) of a tensor of bases
    ``(..., C, n, p)``: groups of ``group_size`` neighbouring entries are replaced by their geodesic
    mean, ``(..., C, n, p) -> (..., C / group_size, n, p)``; ``group_size=None`` pools all of them and
    drops the axis, ``(..., C, n, p) -> (..., n, p)``.  Computed by
    :func:`manifoldnn.manifolds.karcher_mean` with its implicit-function backward (exact gradient at
    the optimum).  The output basis is arbitrary within the mean subspace: use basis-invariant
    quantities (``ProjMap``) downstream.

    Limitation: the Karcher mean is unique only for sets inside a geodesic ball of radius below
    pi/4 (Afsari 2011, "Riemannian Lp center of mass: existence, uniqueness, and convexity"); at a
    principal angle of pi/2 between pooled subspaces (the cut locus) the logarithm map is undefined
    and ``karcher_mean`` raises ``ValueError`` (NaN), and close to it the mean is ill-conditioned.
    Random p-planes of a large ambient space are nearly orthogonal, so pooling independently
    initialised FRMap channels can come close during training; ``ProjPooling`` + ``OrthMap``
    (extrinsic mean) is always defined.

    With ``learn_weights=True`` (needs ``size``, the length of the pooled axis) each group has a
    learnable weight vector, softmax-normalised, initialised uniform: ``weight_logits`` of shape
    ``(size / group_size, group_size)`` (or ``(1, size)`` when ``group_size`` is None).

    Args:
        group_size: entries per group. Default: ``None`` (all of them; the axis is dropped).
        dim: the pooled axis, before the ``(n, p)`` matrix axes (``<= -3``). Default: ``-3``.
        learn_weights: learn a weight vector per group. Default: ``False``.
        size: the length of the pooled axis (with ``learn_weights``). Default: ``None``.
        max_iter: iterations of the Karcher mean. Default: ``50``.
        tol: its tolerance. Default: ``None`` (per dtype, see
            :func:`~manifoldnn.manifolds.karcher_mean`).
        device: of the weights. Default: PyTorch's default.
        dtype: of the weights. Default: PyTorch's default.

    Shape:
        ``(..., C, n, p) -> (..., C / group_size, n, p)`` (or ``(..., n, p)``).

    Examples::

        >>> from manifoldnn.manifolds import Grassmann
        >>> KarcherPool(group_size=2)(Grassmann().random(3, 4, 6, 2).double()).shape
        torch.Size([3, 2, 6, 2])
    """

    def __init__(
        self,
        group_size: int | None = None,
        *,
        dim: int = -3,
        learn_weights: bool = False,
        size: int | None = None,
        max_iter: int = 50,
        tol: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if group_size is not None and group_size < 1:
            raise ValueError(f"KarcherPool group_size must be >= 1, got {group_size}")
        if dim >= -2:
            raise ValueError(
                f"KarcherPool dim must index a set axis before the (n, p) matrix axes, i.e. dim <= -3, "
                f"got {dim}"
            )
        self.group_size = group_size
        self.dim = dim
        self.max_iter = max_iter
        self.tol = tol
        self.manifold = Grassmann()
        if learn_weights:
            if size is None:
                raise ValueError(
                    "KarcherPool(learn_weights=True) needs size, the pooled axis length"
                )
            k = size if group_size is None else group_size
            if size % k:
                raise ValueError(f"KarcherPool: size={size} is not divisible by group_size={k}")
            self.weight_logits = nn.Parameter(torch.zeros(size // k, k, device=device, dtype=dtype))
        else:
            self.register_parameter("weight_logits", None)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        _check_matrix(y, "input", "KarcherPool")
        if y.dim() < -self.dim:
            raise ValueError(
                f"KarcherPool(dim={self.dim}) needs at least {-self.dim} dimensions, got "
                f"{tuple(y.shape)}"
            )
        if y.shape[-1] > y.shape[-2]:
            raise ValueError(
                f"KarcherPool needs bases (..., n, p) with p <= n, got {tuple(y.shape)}"
            )
        y = y.movedim(self.dim, -3)
        size = y.shape[-3]
        k = size if self.group_size is None else self.group_size
        if size % k:
            raise ValueError(f"KarcherPool: {size} entries are not divisible by group_size={k}")
        grouped = y.reshape(y.shape[:-3] + (size // k, k) + y.shape[-2:])
        weights = None
        if self.weight_logits is not None:
            if self.weight_logits.shape != (size // k, k):
                raise ValueError(
                    f"KarcherPool was built for {self.weight_logits.numel()} entries in groups of "
                    f"{self.weight_logits.shape[1]}, got {size}"
                )
            weights = torch.softmax(self.weight_logits, dim=-1).to(y.dtype)
        mean = karcher_mean(
            self.manifold, grouped, weights, max_iter=self.max_iter, tol=self.tol, check=False
        )
        # one Newton-Schulz step (Higham 2008, "Functions of Matrices", Ch. 8, the iteration for
        # the polar factor): the identity on orthonormal U, it brings the float32 orthonormality
        # error of the mean's basis (first order in it) back to rounding level
        mean = newton_schulz_step(mean)
        if self.group_size is None:
            return mean.squeeze(-3)
        return mean.movedim(-3, self.dim)

    def extra_repr(self) -> str:
        learn = self.weight_logits is not None
        return f"group_size={self.group_size}, dim={self.dim}, learn_weights={learn}"


class OrthMap(nn.Module):
    r"""Orthonormal map: symmetric matrix -> its top-``rank`` eigenvectors (GrNet, Huang, Wu & Van
    Gool 2018, OrthMap layer).

    Returns an orthonormal basis of the dominant ``rank``-dimensional eigenspace of
    ``sym(input)``, columns ordered by decreasing eigenvalue, each signed so that its
    largest-magnitude entry is positive. The backward (:func:`manifoldnn.linalg.eigh_top`) uses a
    Lorentzian-broadened eigenvector kernel and stays finite when eigenvalues repeat, as they
    always do for projectors; it is exact for span-dependent losses when
    :math:`\lambda_p > \lambda_{p+1}` by more than the broadening.

    Args:
        rank: p, the number of eigenvectors kept.
        broadening: the relative broadening of the backward. Default: ``None`` (a per-dtype
            value, see :func:`~manifoldnn.linalg.eigh_top`).

    Shape:
        ``(..., n, n) -> (..., n, rank)`` with ``rank <= n``.

    Examples::

        >>> from manifoldnn.manifolds import Grassmann
        >>> y = Grassmann().random(4, 6, 2)
        >>> OrthMap(2)(y @ y.transpose(-1, -2)).shape
        torch.Size([4, 6, 2])
    """

    p = renamed_attribute("p", "rank")

    @renamed_arguments(p="rank")
    def __init__(self, rank: int, *, broadening: float | None = None) -> None:
        super().__init__()
        self.rank = check_positive_int(rank, "rank")
        self.broadening = broadening

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        _check_square(a, "OrthMap")
        if self.rank > a.shape[-1]:
            raise ValueError(f"OrthMap: rank={self.rank} exceeds the matrix size n={a.shape[-1]}")
        return eigh_top(a, self.rank, broadening=self.broadening)[1]

    def extra_repr(self) -> str:
        return f"rank={self.rank}"


class SubspaceEmbedding(nn.Module):
    r"""Data -> Grassmannian: orthonormal basis of the dominant ``rank``-dimensional subspace
    spanned by the columns of a feature matrix.

    The input holds m vectors of :math:`\mathbb{R}^n` as columns (e.g. n sensor channels by m time
    steps); pass ``x.transpose(-1, -2)`` for a set stored as rows. The output is the top-p left
    singular vectors of X (optionally of :math:`X - \bar x 1^\top` with ``center=True``), computed
    as the top-p eigenvectors of :math:`X X^\top` (PCA subspace; the standard image-set / video
    representation on the Grassmannian, e.g. Hamm & Lee, ICML 2008, "Grassmann discriminant
    analysis") with the gap-safe backward of :func:`~manifoldnn.linalg.eigh_top`.

    Args:
        rank: p, the dimension of the subspace (``<= min(n, m)``).
        center: subtract the mean column first. Default: ``False``.
        broadening: the relative broadening of the backward. Default: ``None`` (per dtype).

    Shape:
        ``(..., n, m) -> (..., n, rank)``.

    Examples::

        >>> SubspaceEmbedding(3)(torch.randn(5, 10, 40)).shape
        torch.Size([5, 10, 3])
    """

    p = renamed_attribute("p", "rank")

    @renamed_arguments(p="rank")
    def __init__(self, rank: int, *, center: bool = False, broadening: float | None = None) -> None:
        super().__init__()
        self.rank = check_positive_int(rank, "rank")
        self.center = center
        self.broadening = broadening

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_matrix(x, "input", "SubspaceEmbedding")
        n, m = x.shape[-2], x.shape[-1]
        if self.rank > n:
            raise ValueError(
                f"SubspaceEmbedding: rank={self.rank} exceeds the ambient dimension n={n}"
            )
        if self.rank > m:
            raise ValueError(
                f"SubspaceEmbedding: rank={self.rank} exceeds the number of vectors m={m}: the "
                f"span has dimension at most {m}"
            )
        if self.center:
            x = x - x.mean(dim=-1, keepdim=True)
        gram = x @ x.transpose(-1, -2)
        return eigh_top(gram, self.rank, broadening=self.broadening)[1]

    def extra_repr(self) -> str:
        return f"rank={self.rank}, center={self.center}"
