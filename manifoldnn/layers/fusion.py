r"""Orthogonal direct-sum fusion of a text vector and a multi-codebook acoustic tensor.

The operator embeds a text feature :math:`A \in \mathbb{R}^n` and an acoustic feature
:math:`B \in \mathbb{R}^{K \times V}` (K codebooks of width V) of the same time step into one stream

.. math::

    C = T(A, B) = Q_A U_A^\top (A - \mu_A) + Q_B U_B^\top (\operatorname{vec} B - \mu_B)
    \in \mathbb{R}^c, \qquad Q = [Q_A \; Q_B] \in \mathrm{St}(c, r_A + r_B),

so :math:`S_A = \operatorname{span} Q_A \perp S_B = \operatorname{span} Q_B` because the columns of
the single Stiefel point Q are orthonormal.  Projecting C on :math:`S_A` (:math:`S_B`) gives back
:math:`U_A U_A^\top (A - \mu_A)` (resp. B), i.e. A (B) itself in exact mode
(:math:`r_A = n`, :math:`r_B = KV`, :math:`U = I`, needs :math:`c \ge n + KV`), and its orthogonal
projection on the retained directions :math:`U_A \in \mathrm{St}(n, r_A)`,
:math:`U_B \in \mathrm{St}(KV, r_B)` in the lossy mode :math:`r_A + r_B \le c < n + KV`.

Every orthonormal frame (Q, and U_A / U_B in lossy mode) is a
:class:`manifoldnn.parametrizations.OrthonormalFrame` (Stiefel parameter, matrix exponential or Cayley
map of a skew matrix).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import scipy.linalg
import torch
from torch import nn

from ..linalg import fix_column_signs, qr_positive
from ..losses.infonce import info_nce_loss
from ..parametrizations import PARAMETRIZATIONS, OrthonormalFrame, Parametrization
from ..utils.optional import require
from ..validation import check_choice, check_positive_int, renamed_arguments, renamed_attribute

__all__ = ["OrthogonalDirectSum", "whitened_cca"]


def _covariance(x: np.ndarray) -> np.ndarray:
    return x.T @ x / max(x.shape[0] - 1, 1)


def _pca_directions(x: np.ndarray, rank: int) -> np.ndarray:
    """Top-``rank`` principal directions ``(d, rank)`` of centred data ``x`` ``(N, d)``."""
    eigvals, eigvecs = scipy.linalg.eigh(_covariance(x))
    return eigvecs[:, np.argsort(eigvals)[::-1][:rank]]


def _inverse_sqrt(cov: np.ndarray, regularization: float) -> np.ndarray:
    scale = regularization * max(np.trace(cov) / cov.shape[0], np.finfo(cov.dtype).tiny)
    eigvals, eigvecs = scipy.linalg.eigh(cov + scale * np.eye(cov.shape[0]))
    return (eigvecs / np.sqrt(eigvals)) @ eigvecs.T


def _cca_directions(
    a: np.ndarray, b: np.ndarray, rank_a: int, rank_b: int, regularization: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Regularised CCA weights of centred ``a`` ``(N, n)``, ``b`` ``(N, m)``.

    Hotelling 1936; computed as the SVD of the whitened cross-covariance
    :math:`\Sigma_{aa}^{-1/2}\Sigma_{ab}\Sigma_{bb}^{-1/2} = U S V^\top`, weights
    :math:`W_a = \Sigma_{aa}^{-1/2}U`, :math:`W_b = \Sigma_{bb}^{-1/2}V` (Hardoon, Szedmak,
    Shawe-Taylor 2004, sec. 2), ridge ``regularization * mean variance`` on each covariance.
    Returns ``(W_a (n, rank_a), W_b (m, rank_b), canonical correlations)``.
    """
    whiten_a = _inverse_sqrt(_covariance(a), regularization)
    whiten_b = _inverse_sqrt(_covariance(b), regularization)
    cross = a.T @ b / max(a.shape[0] - 1, 1)
    u, s, vt = scipy.linalg.svd(whiten_a @ cross @ whiten_b, full_matrices=True)
    return whiten_a @ u[:, :rank_a], whiten_b @ vt.T[:, :rank_b], s


def whitened_cca(
    a: torch.Tensor, b: torch.Tensor, rank: int, regularization: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Plain regularised CCA: whitened canonical weights of paired ``a (N, n)``, ``b (N, m)``.

    .. math::

        \Sigma_{aa}^{-1/2}\Sigma_{ab}\Sigma_{bb}^{-1/2} = U S V^\top,\qquad
        W_a = \Sigma_{aa}^{-1/2} U_{:, :r},\quad W_b = \Sigma_{bb}^{-1/2} V_{:, :r}

    (Hotelling 1936; Hardoon, Szedmak, Shawe-Taylor 2004, sec. 2), ridge
    ``regularization * mean variance`` on each covariance, computed in float64. The canonical
    variates of new data are ``(a - mean_a) @ W_a`` and ``(b - mean_b) @ W_b``: the textbook
    cross-modal retrieval baseline, and the directions :meth:`OrthogonalDirectSum.initialize`
    orthonormalises.

    Args:
        a: ``(N, n)`` samples of the first modality, N >= 2.
        b: ``(N, m)`` samples of the second modality, paired with ``a`` row by row.
        rank: r <= min(n, m) canonical pairs kept.
        regularization: relative ridge. Default: 1e-3.

    Returns:
        ``(W_a (n, r), W_b (m, r), mean_a (n,), mean_b (m,))`` in the dtype of ``a``.
    """
    for value, name in ((a, "a"), (b, "b")):
        if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.shape[0] < 2:
            raise ValueError(f"{name} must be an (N, d) tensor with N >= 2")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must pair the same N rows, got {a.shape[0]} and {b.shape[0]}")
    check_positive_int(rank, "rank")
    if rank > min(a.shape[1], b.shape[1]):
        raise ValueError(f"rank={rank} exceeds min(n, m) = {min(a.shape[1], b.shape[1])}")
    if regularization < 0:
        raise ValueError(f"regularization must be non-negative, got {regularization}")
    a_np = a.detach().to("cpu", torch.float64).numpy()
    b_np = b.detach().to("cpu", torch.float64).numpy()
    mean_a, mean_b = a_np.mean(0), b_np.mean(0)
    w_a, w_b, _ = _cca_directions(a_np - mean_a, b_np - mean_b, rank, rank, regularization)
    return tuple(
        torch.from_numpy(np.ascontiguousarray(x)).to(device=a.device, dtype=a.dtype)
        for x in (w_a, w_b, mean_a, mean_b)
    )


def _orthonormal_span(weights: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """Orthonormal basis (Gram-Schmidt order) of the columns of ``weights`` ``(d, r)``."""
    q, r = np.linalg.qr(weights)
    q = fix_column_signs(torch.from_numpy(q), torch.from_numpy(np.diag(r).copy())).numpy()
    deficient = np.abs(np.diag(r)) <= 1e-12 * max(np.abs(r).max(), 1e-300)
    if deficient.any():  # rank-deficient weights: fill with random directions in the complement
        filler = generator.standard_normal(q.shape)
        q[:, deficient] = filler[:, deficient]
        q = np.linalg.qr(q)[0]
    return q


class OrthogonalDirectSum(nn.Module):
    r"""Orthogonal direct-sum fusion :math:`C = \phi(A) + \psi(B)` with :math:`S_A \perp S_B`.

    A text feature ``A (..., text_size)`` and an acoustic feature ``B (..., num_codebooks,
    code_size)`` (or, with ``num_tokens``, its integer codebook ids ``(..., num_codebooks)``) of
    the same time step are embedded into one stream ``C (..., out_size)`` (see the module
    docstring for the formula); :meth:`decompose` gives back A and B (exactly in exact mode, their
    orthogonal projections on the retained directions in the lossy mode). Everything acts on the
    last dimensions only, so time steps are independent.

    Args:
        text_size: n, the width of the text feature A.
        num_codebooks: K, the number of codebooks of the acoustic feature B.
        code_size: V, the embedding width of each codebook.
        out_size: c, the width of the fused stream C.
        parametrization: of the orthonormal frames, ``"stiefel"``, ``"cayley"`` or
            ``"matrix_exp"`` (see :class:`~manifoldnn.parametrizations.OrthonormalFrame`).
            Default: ``"stiefel"``.
        rank_a: r_A, the retained size of A (``<= text_size``). Default: ``None`` (all of it).
        rank_b: r_B, the retained size of B (``<= num_codebooks * code_size``). Default: ``None``
            (all of it). ``rank_a + rank_b <= out_size`` is required.
        exact: ``True`` requires exact mode (raises if ``out_size < text_size + num_codebooks *
            code_size``); ``False`` allows the lossy mode. Default: ``None`` (inferred from
            ``rank_a`` / ``rank_b``).
        num_tokens: the size of each of the K codebook embedding tables ``(K, num_tokens, V)``
            for the token-id path (initialised with orthonormal rows when ``num_tokens <= V``, so
            that codebook vectors are mutually orthogonal and decoding is exact). Default:
            ``None`` (features only).
        readout_size: s, the size of the shared read-out (the first s coordinates of C) used by
            :meth:`readout` and the InfoNCE alignment. Default: ``None``
            (``min(r_A, r_B, out_size // 2)``).
        high_precision: evaluate the frames' exp / Cayley maps and QR retractions in float64 and
            round once (see :class:`~manifoldnn.parametrizations.OrthonormalFrame`).
            Default: ``False``.
        validate: check token ids against ``num_tokens`` on the host in eager forwards.
            Default: ``True``.
        dtype: of parameters and buffers. Default: PyTorch's default.
        device: of parameters and buffers. Default: PyTorch's default.

    Shape:
        - ``forward(A (..., text_size), B (..., K, V) or ids (..., K)) -> C (..., out_size)``, the
          leading dimensions of A and B broadcast (e.g. A ``(..., 1, n)`` against a sequence B
          ``(..., T, K, V)``);
        - ``decompose(C) -> (A_hat (..., text_size), B_hat (..., K, V))``;
        - ``project_a(C)``, ``project_b(C)``: ``(..., out_size)``, the orthogonal projections of C
          on S_A, S_B (they sum to C when C lies in S_A + S_B).

    Examples::

        >>> fusion = OrthogonalDirectSum(7, 3, 5, 22)
        >>> a, b = torch.randn(4, 7), torch.randn(4, 3, 5)
        >>> a_hat, b_hat = fusion.decompose(fusion(a, b))
        >>> torch.allclose(a_hat, a, atol=1e-5) and torch.allclose(b_hat, b, atol=1e-5)
        True
    """

    n = renamed_attribute("n", "text_size")
    K = renamed_attribute("K", "num_codebooks")
    V = renamed_attribute("V", "code_size")
    c = renamed_attribute("c", "out_size")
    readout_dim = renamed_attribute("readout_dim", "readout_size")

    @renamed_arguments(n="text_size", K="num_codebooks", V="code_size", c="out_size")
    @renamed_arguments(readout_dim="readout_size")
    def __init__(
        self,
        text_size: int,
        num_codebooks: int,
        code_size: int,
        out_size: int,
        *,
        parametrization: Parametrization = "stiefel",
        rank_a: int | None = None,
        rank_b: int | None = None,
        exact: bool | None = None,
        num_tokens: int | None = None,
        readout_size: int | None = None,
        high_precision: bool = False,
        validate: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.validate = validate
        n = check_positive_int(text_size, "text_size")
        K = check_positive_int(num_codebooks, "num_codebooks")
        V = check_positive_int(code_size, "code_size")
        c = check_positive_int(out_size, "out_size")
        full_a, full_b = n, K * V
        if exact and (
            (rank_a is not None and rank_a != full_a) or (rank_b is not None and rank_b != full_b)
        ):
            raise ValueError(
                f"exact mode keeps everything: rank_a must be text_size={n} and rank_b "
                f"num_codebooks * code_size={full_b}, got rank_a={rank_a}, rank_b={rank_b}"
            )
        rank_a = full_a if rank_a is None else check_positive_int(rank_a, "rank_a")
        rank_b = full_b if rank_b is None else check_positive_int(rank_b, "rank_b")
        if rank_a > full_a:
            raise ValueError(f"rank_a={rank_a} exceeds text_size={n}")
        if rank_b > full_b:
            raise ValueError(f"rank_b={rank_b} exceeds num_codebooks * code_size={full_b}")
        is_exact = rank_a == full_a and rank_b == full_b
        if exact is None:
            exact = is_exact
        if exact and c < full_a + full_b:
            raise ValueError(
                f"out_size={c} is too small for exact mode, which needs out_size >= text_size + "
                f"num_codebooks * code_size = {full_a + full_b}; pass rank_a and rank_b with "
                f"rank_a + rank_b <= out_size for the lossy mode"
            )
        if rank_a + rank_b > c:
            raise ValueError(
                f"rank_a + rank_b = {rank_a + rank_b} > out_size = {c}: S_A + S_B must fit in C"
            )
        check_choice(parametrization, "parametrization", PARAMETRIZATIONS)
        if num_tokens is not None:
            check_positive_int(num_tokens, "num_tokens")
        if readout_size is None:
            readout_size = max(1, min(rank_a, rank_b, c // 2))
        check_positive_int(readout_size, "readout_size")
        if readout_size > c:
            raise ValueError(f"readout_size={readout_size} exceeds out_size={c}")

        self.text_size, self.num_codebooks, self.code_size, self.out_size = n, K, V, c
        self.rank_a, self.rank_b = rank_a, rank_b
        self.exact = bool(exact) and is_exact
        self.parametrization = parametrization
        self.num_tokens = num_tokens
        self.readout_size = readout_size
        factory = {"dtype": dtype, "device": device}
        frame_kwargs = {"high_precision": high_precision, **factory}
        self.frame = OrthonormalFrame(c, rank_a + rank_b, parametrization, **frame_kwargs)
        self.retained_a = (
            OrthonormalFrame(n, rank_a, parametrization, **frame_kwargs) if rank_a < n else None
        )
        self.retained_b = (
            OrthonormalFrame(full_b, rank_b, parametrization, **frame_kwargs)
            if rank_b < full_b
            else None
        )
        self._caching = 0
        self._frames_cache: tuple | None = None
        self.register_buffer("mean_a", torch.zeros(n, **factory))
        self.register_buffer("mean_b", torch.zeros(full_b, **factory))
        if num_tokens is not None:
            self.codebooks = nn.Parameter(torch.empty(K, num_tokens, V, **factory))
        else:
            self.register_parameter("codebooks", None)
        self.reset_parameters()

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random orthonormal frames (uniform on the Stiefel manifolds), zero means, codebooks."""
        ref = self.mean_a
        for frame in (self.frame, self.retained_a, self.retained_b):
            if frame is not None:
                gaussian = torch.randn(
                    frame.ambient_size, frame.rank, dtype=ref.dtype, device=ref.device
                )
                frame.load_(gaussian)
        self.mean_a.zero_()
        self.mean_b.zero_()
        if self.codebooks is not None:
            n_tok, V = self.num_tokens, self.code_size
            if n_tok <= V:
                gaussian = torch.randn(
                    self.num_codebooks, V, n_tok, dtype=ref.dtype, device=ref.device
                )
                self.codebooks.copy_(qr_positive(gaussian).transpose(-1, -2))
            else:
                nn.init.normal_(self.codebooks, std=1.0 / math.sqrt(V))

    @torch.no_grad()
    def initialize(
        self,
        A: torch.Tensor,
        B: torch.Tensor,
        method: Literal["random", "pca", "cca"] = "cca",
        *,
        regularization: float = 1e-3,
        seed: int = 0,
    ) -> OrthogonalDirectSum:
        r"""Initialise the retained directions and the embedding from paired data.

        The means of A and vec(B) are always set from the data (centring). Q pairs the i-th
        retained direction of A with the i-th of B in the shared read-out: for i < k,
        ``Q_A e_i = (e_i + e_{s+i}) / sqrt(2)``, ``Q_B e_i = (e_i - e_{s+i}) / sqrt(2)``
        (s = readout_size), so the read-out (first s coordinates of C) sees both modalities'
        i-th directions on axis i while C still separates them. In exact mode the full
        orthogonal change of basis is folded into Q.

        Args:
            A: ``(N, text_size)`` (or ``(..., text_size)``, flattened) text features.
            B: ``(N, K, V)`` features or ``(N, K)`` token ids, paired with A.
            method: ``"random"`` (uniform retained directions), ``"pca"`` (top principal
                directions of each modality: Pearson 1901 / Jolliffe 2002, eq. 1.1) or ``"cca"``
                (span of the top regularised canonical weights, Hotelling 1936, orthonormalised
                in Gram-Schmidt order). Default: ``"cca"``.
            regularization: CCA ridge, relative to the mean variance of each modality.
                Default: ``1e-3``.
            seed: for the random parts (random directions, orthonormal completion).
                Default: ``0``.

        Returns:
            ``self``.
        """
        if method not in ("random", "pca", "cca"):
            raise ValueError(f"method must be 'random', 'pca' or 'cca', got {method!r}")
        a, b = self._flatten_pair(A, B)
        if a.shape[0] < 2:
            raise ValueError(f"initialize needs at least 2 paired samples, got {a.shape[0]}")
        a_np = a.detach().to("cpu", torch.float64).numpy()
        b_np = b.detach().to("cpu", torch.float64).numpy()
        if not (np.isfinite(a_np).all() and np.isfinite(b_np).all()):
            raise ValueError("initialize got NaN or Inf in A or B")
        mean_a, mean_b = a_np.mean(0), b_np.mean(0)
        a_np, b_np = a_np - mean_a, b_np - mean_b
        rng = np.random.default_rng(seed)
        full_a, full_b = self.text_size, self.num_codebooks * self.code_size
        # Retained directions: for exact mode, the full orthogonal change of basis.
        keep_a = full_a if self.retained_a is None else self.rank_a
        keep_b = full_b if self.retained_b is None else self.rank_b
        if method == "random":
            dirs_a = _orthonormal_span(rng.standard_normal((full_a, keep_a)), rng)
            dirs_b = _orthonormal_span(rng.standard_normal((full_b, keep_b)), rng)
        elif method == "pca":
            dirs_a = _pca_directions(a_np, keep_a)
            dirs_b = _pca_directions(b_np, keep_b)
        else:
            w_a, w_b, _ = _cca_directions(a_np, b_np, keep_a, keep_b, regularization)
            dirs_a = _orthonormal_span(w_a, rng)
            dirs_b = _orthonormal_span(w_b, rng)
        if method == "random":
            placement = _orthonormal_span(
                rng.standard_normal((self.out_size, self.rank_a + self.rank_b)), rng
            )
        else:
            placement = self._paired_placement()
        if self.retained_a is None:
            placement_a = placement[:, : self.rank_a] @ dirs_a.T
        else:
            placement_a = placement[:, : self.rank_a]
            self.retained_a.load_(torch.from_numpy(dirs_a))
        if self.retained_b is None:
            placement_b = placement[:, self.rank_a :] @ dirs_b.T
        else:
            placement_b = placement[:, self.rank_a :]
            self.retained_b.load_(torch.from_numpy(dirs_b))
        self.frame.load_(torch.from_numpy(np.concatenate([placement_a, placement_b], axis=1)))
        self.mean_a.copy_(torch.from_numpy(mean_a))
        self.mean_b.copy_(torch.from_numpy(mean_b))
        return self

    def _paired_placement(self) -> np.ndarray:
        """``(c, r_A + r_B)`` orthonormal placement pairing A- and B-directions in the read-out."""
        c, s, r_a, r_b = self.out_size, self.readout_size, self.rank_a, self.rank_b
        pairs = max(0, min(s, r_a, r_b, c - s))
        placement = np.zeros((c, r_a + r_b))
        root_half = 1.0 / math.sqrt(2.0)
        for i in range(pairs):
            placement[i, i] = placement[s + i, i] = root_half
            placement[i, r_a + i] = root_half
            placement[s + i, r_a + i] = -root_half
        used = set(range(pairs)) | set(range(s, s + pairs))
        # Unpaired directions go outside the read-out first, so they do not disturb it.
        free = [j for j in range(s, c) if j not in used] + [j for j in range(s) if j not in used]
        columns = list(range(pairs, r_a)) + list(range(r_a + pairs, r_a + r_b))
        for column, coordinate in zip(columns, free):
            placement[coordinate, column] = 1.0
        return placement

    # ------------------------------------------------------------------ validation
    def _floating_dtype(self) -> torch.dtype:
        return self.mean_a.dtype

    def _check_vectors(self, name: str, x: torch.Tensor, size_name: str) -> None:
        """``x`` must be a tensor ``(..., size)`` of the operator's dtype, ``size`` its attribute."""
        size = getattr(self, size_name)
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != size:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must have shape (..., {size_name}={size}), got {shape}")
        if x.dtype != self._floating_dtype():
            raise ValueError(f"{name} has dtype {x.dtype}, the operator {self._floating_dtype()}")

    def _check_a(self, A: torch.Tensor) -> None:
        self._check_vectors("A", A, "text_size")

    def _embed_b(self, B: torch.Tensor) -> torch.Tensor:
        """``(..., K, V)`` acoustic features from features or token ids ``(..., K)``."""
        if not isinstance(B, torch.Tensor):
            raise ValueError(f"B must be a tensor, got {type(B).__name__}")
        if B.is_floating_point():
            if B.dim() < 2 or B.shape[-2:] != (self.num_codebooks, self.code_size):
                raise ValueError(
                    f"B must have shape (..., num_codebooks={self.num_codebooks}, "
                    f"code_size={self.code_size}) or token ids (..., num_codebooks), "
                    f"got {tuple(B.shape)}"
                )
            if B.dtype != self._floating_dtype():
                raise ValueError(f"B has dtype {B.dtype}, the operator {self._floating_dtype()}")
            return B
        if B.dtype in (torch.bool, torch.complex64, torch.complex128):
            raise ValueError(f"B must be real features or integer token ids, got dtype {B.dtype}")
        if self.codebooks is None:
            raise ValueError("integer B (token ids) needs the operator built with num_tokens=...")
        if B.dim() < 1 or B.shape[-1] != self.num_codebooks:
            raise ValueError(
                f"token ids B must have shape (..., num_codebooks={self.num_codebooks}), got "
                f"{tuple(B.shape)}"
            )
        if (
            self.validate
            and not torch.compiler.is_compiling()
            and B.numel()
            and (int(B.min()) < 0 or int(B.max()) >= self.num_tokens)
        ):
            raise ValueError(
                f"token ids must lie in [0, {self.num_tokens}), got range "
                f"[{int(B.min())}, {int(B.max())}]"
            )
        codebook_index = torch.arange(self.num_codebooks, device=B.device)
        return self.codebooks[codebook_index, B.long()]

    def _flatten_pair(self, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_a(A)
        features = self._embed_b(B)
        try:
            lead = torch.broadcast_shapes(A.shape[:-1], features.shape[:-2])
        except RuntimeError as err:
            raise ValueError(
                f"leading dims of A {tuple(A.shape[:-1])} and B {tuple(features.shape[:-2])} "
                "do not broadcast"
            ) from err
        a = A.expand(lead + (self.text_size,)).reshape(-1, self.text_size)
        b = features.expand(lead + (self.num_codebooks, self.code_size)).reshape(
            -1, self.num_codebooks * self.code_size
        )
        return a, b

    def _check_c(self, C: torch.Tensor) -> None:
        self._check_vectors("C", C, "out_size")

    # ------------------------------------------------------------------ the operator
    def frames(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(Q_A (c, r_A), Q_B (c, r_B), U_A (n, r_A) or None, U_B (K*V, r_B) or None)``."""
        if self._caching and self._frames_cache is not None:
            return self._frames_cache
        q = self.frame()
        u_a = None if self.retained_a is None else self.retained_a()
        u_b = None if self.retained_b is None else self.retained_b()
        result = (q[:, : self.rank_a], q[:, self.rank_a :], u_a, u_b)
        if self._caching:
            self._frames_cache = result
        return result

    @contextlib.contextmanager
    def cached(self) -> Iterator[OrthogonalDirectSum]:
        """Context in which the frames are computed once and reused by every call.

        The Cayley / exponential maps cost an ``(c, c)`` solve / exponential per evaluation;
        use this around inference loops (as ``torch.nn.utils.parametrize.cached``). Do not keep
        it open across optimiser steps: the cached frames would be stale.
        """
        self._caching += 1
        try:
            yield self
        finally:
            self._caching -= 1
            if not self._caching:
                self._frames_cache = None

    @staticmethod
    def _reduce(x: torch.Tensor, mean: torch.Tensor, retained: torch.Tensor | None) -> torch.Tensor:
        x = x - mean
        return x if retained is None else x @ retained

    def encode_a(self, A: torch.Tensor) -> torch.Tensor:
        """phi(A) = Q_A U_A^T (A - mu_A), ``(..., n) -> (..., c)``, lies in S_A."""
        self._check_a(A)
        q_a, _, u_a, _ = self.frames()
        return self._reduce(A, self.mean_a, u_a) @ q_a.transpose(-1, -2)

    def encode_b(self, B: torch.Tensor) -> torch.Tensor:
        """psi(B) = Q_B U_B^T (vec B - mu_B), ``(..., K, V)`` or ids ``(..., K)`` -> ``(..., c)``."""
        features = self._embed_b(B)
        _, q_b, _, u_b = self.frames()
        flat = features.reshape(features.shape[:-2] + (self.num_codebooks * self.code_size,))
        return self._reduce(flat, self.mean_b, u_b) @ q_b.transpose(-1, -2)

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """Fused stream ``C = phi(A) + psi(B)`` ``(..., c)``; A ``(..., n)``, B ``(..., K, V)``/ids."""
        with self.cached():
            phi, psi = self.encode_a(A), self.encode_b(B)
        try:
            torch.broadcast_shapes(phi.shape[:-1], psi.shape[:-1])
        except RuntimeError as err:
            raise ValueError(
                f"leading dims of A {tuple(phi.shape[:-1])} and B {tuple(psi.shape[:-1])} "
                "do not broadcast"
            ) from err
        return phi + psi

    def decompose(self, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A_hat (..., n), B_hat (..., K, V))`` from C ``(..., c)``: U Q^T C + mu per block."""
        self._check_c(C)
        q_a, q_b, u_a, u_b = self.frames()
        coords_a = C @ q_a
        coords_b = C @ q_b
        a_hat = (coords_a if u_a is None else coords_a @ u_a.transpose(-1, -2)) + self.mean_a
        b_hat = (coords_b if u_b is None else coords_b @ u_b.transpose(-1, -2)) + self.mean_b
        return a_hat, b_hat.reshape(C.shape[:-1] + (self.num_codebooks, self.code_size))

    def project_a(self, C: torch.Tensor) -> torch.Tensor:
        """Orthogonal projection ``Q_A Q_A^T C`` ``(..., c)`` of C on S_A (equals phi(A))."""
        self._check_c(C)
        q_a = self.frames()[0]
        return (C @ q_a) @ q_a.transpose(-1, -2)

    def project_b(self, C: torch.Tensor) -> torch.Tensor:
        """Orthogonal projection ``Q_B Q_B^T C`` ``(..., c)`` of C on S_B (equals psi(B))."""
        self._check_c(C)
        q_b = self.frames()[1]
        return (C @ q_b) @ q_b.transpose(-1, -2)

    def decode_tokens(self, C: torch.Tensor) -> torch.Tensor:
        """Codebook ids ``(..., K)``: nearest codebook row to each block of ``decompose(C)[1]``."""
        if self.codebooks is None:
            raise ValueError("decode_tokens needs the operator built with num_tokens=...")
        b_hat = self.decompose(C)[1]
        scores = torch.einsum("...kv,knv->...kn", b_hat, self.codebooks)
        distances = (self.codebooks * self.codebooks).sum(-1) - 2.0 * scores
        return distances.argmin(dim=-1)

    def readout(self, C: torch.Tensor) -> torch.Tensor:
        """Shared read-out: the first ``readout_size`` coordinates of C ``(..., c) -> (..., s)``."""
        self._check_c(C)
        return C[..., : self.readout_size]

    def orthogonality_error(self) -> tuple[float, float]:
        """``(||Q_A^T Q_B||_2, ||Q^T Q - I||_2)`` (spectral norms) for the embedding frame Q."""
        with torch.no_grad():
            q = self.frame()
            q_a, q_b = q[:, : self.rank_a], q[:, self.rank_a :]
            cross = torch.linalg.matrix_norm(q_a.transpose(-1, -2) @ q_b, ord=2)
            gram = q.transpose(-1, -2) @ q
            eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
            return float(cross), float(torch.linalg.matrix_norm(gram - eye, ord=2))

    # ------------------------------------------------------------------ full-batch fit
    def alignment_loss(
        self, A: torch.Tensor, B: torch.Tensor, temperature: float = 0.1, *, normalize: bool = False
    ) -> torch.Tensor:
        """Symmetric InfoNCE between ``readout(phi(A))`` and ``readout(psi(B))`` over the batch.

        A ``(N, n)``, B ``(N, K, V)`` or ids ``(N, K)``; pair i is the positive of row i, every
        other row an in-batch negative. Returns a scalar. The default dot-product similarity
        (``normalize=False``) is smooth on the whole Stiefel manifold; with cosine similarity
        the loss is blind to how much of S_A (S_B) reaches the read-out, so a frame whose
        read-out of one modality shrinks towards zero costs nothing and has exploding gradients.
        """
        with self.cached():
            z_a = self.readout(self.encode_a(A))
            z_b = self.readout(self.encode_b(B))
        return info_nce_loss(z_a, z_b, temperature, normalize=normalize)

    def reconstruction_loss(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """Mean over samples of ``||A - A_hat||^2 + ||B - B_hat||_F^2`` after fuse/decompose."""
        a, b = self._flatten_pair(A, B)
        with self.cached():
            a_hat, b_hat = self.decompose(
                self.forward(a, b.reshape(-1, self.num_codebooks, self.code_size))
            )
        b_err = (b - b_hat.reshape(b.shape)).pow(2).sum(-1)
        return ((a - a_hat).pow(2).sum(-1) + b_err).mean()

    def fit(
        self,
        A: torch.Tensor,
        B: torch.Tensor,
        *,
        objective: Literal["infonce", "reconstruction"] = "infonce",
        temperature: float = 0.1,
        normalize: bool = False,
        solver: Literal["trust_regions", "conjugate_gradient"] = "trust_regions",
        max_iterations: int = 100,
        min_gradient_norm: float = 1e-6,
        max_time: float = 600.0,
        verbosity: int = 0,
    ) -> OrthogonalDirectSum:
        r"""Full-batch fit of the orthonormal frames with pymanopt (PyTorch backend).

        ``objective="infonce"`` optimises the embedding frame Q on St(c, r_A + r_B) for
        :meth:`alignment_loss` (the rotation; reconstruction is invariant to Q), with the same
        ``temperature`` and ``normalize``.
        ``objective="reconstruction"`` optimises the retained directions U_A, U_B (lossy mode
        only) for :meth:`reconstruction_loss`, whose minimum is the PCA solution
        (Eckart, Young 1936). Solvers: Riemannian trust regions (Absil, Baker, Gallivan 2007) or
        conjugate gradient (Absil et al. 2008, sec. 8.3), starting from the current frames,
        computed in float64. The result is loaded into the module (any parametrisation);
        ``fit_result_`` keeps pymanopt's ``OptimizerResult``. Needs the ``fusion`` extra
        (``pip install "manifoldnn[fusion]"``).

        Args:
            A: ``(N, text_size)`` text features.
            B: ``(N, K, V)`` features or ``(N, K)`` token ids, paired with A.
            objective: ``"infonce"`` or ``"reconstruction"``. Default: ``"infonce"``.
            temperature: of the InfoNCE loss. Default: ``0.1``.
            normalize: cosine instead of dot-product similarity. Default: ``False``.
            solver: ``"trust_regions"`` or ``"conjugate_gradient"``.
                Default: ``"trust_regions"``.
            max_iterations: of the solver. Default: ``100``.
            min_gradient_norm: stopping tolerance of the solver. Default: ``1e-6``.
            max_time: seconds. Default: ``600.0``.
            verbosity: pymanopt's verbosity. Default: ``0``.

        Returns:
            ``self``.
        """
        pymanopt = require("pymanopt", "fusion", "OrthogonalDirectSum.fit")

        if objective not in ("infonce", "reconstruction"):
            raise ValueError(f"objective must be 'infonce' or 'reconstruction', got {objective!r}")
        if solver not in ("trust_regions", "conjugate_gradient"):
            raise ValueError(
                f"solver must be 'trust_regions' or 'conjugate_gradient', got {solver!r}"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        a, b = self._flatten_pair(A, B)
        a = a.detach().to("cpu", torch.float64)
        b = b.detach().to("cpu", torch.float64)
        q_a, q_b, u_a, u_b = (None if t is None else t.detach() for t in self.frames())
        mean_a = self.mean_a.detach().to("cpu", torch.float64)
        mean_b = self.mean_b.detach().to("cpu", torch.float64)

        def as64(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to("cpu", torch.float64)

        q, u_a, u_b = as64(torch.cat([q_a, q_b], dim=1)), as64(u_a), as64(u_b)
        r_a = self.rank_a

        if objective == "infonce":
            x_a = self._reduce(a, mean_a, u_a)
            x_b = self._reduce(b, mean_b, u_b)
            s = self.readout_size
            manifold = pymanopt.manifolds.Stiefel(self.out_size, q.shape[1])

            @pymanopt.function.pytorch(manifold)
            def cost(point: torch.Tensor) -> torch.Tensor:
                z_a = x_a @ point[:s, :r_a].transpose(-1, -2)
                z_b = x_b @ point[:s, r_a:].transpose(-1, -2)
                return info_nce_loss(z_a, z_b, temperature, normalize=normalize)

            start: list | np.ndarray = q.numpy()
        else:
            frames = [(u_a, a - mean_a), (u_b, b - mean_b)]
            frames = [(u, x) for u, x in frames if u is not None]
            if not frames:
                raise ValueError(
                    "objective='reconstruction' needs the lossy mode (rank_a < n or rank_b < K*V):"
                    " in exact mode the reconstruction is already exact"
                )
            n_samples = a.shape[0]
            manifolds = [pymanopt.manifolds.Stiefel(u.shape[0], u.shape[1]) for u, _ in frames]
            manifold = (
                manifolds[0] if len(manifolds) == 1 else pymanopt.manifolds.Product(manifolds)
            )

            @pymanopt.function.pytorch(manifold)
            def cost(*points: torch.Tensor) -> torch.Tensor:
                total = a.new_zeros(())
                for point, (_, x) in zip(points, frames):
                    residual = x - (x @ point) @ point.transpose(-1, -2)
                    total = total + residual.pow(2).sum()
                return total / n_samples

            start = frames[0][0].numpy() if len(frames) == 1 else [u.numpy() for u, _ in frames]

        problem = pymanopt.Problem(manifold, cost)
        optimizer_cls = (
            pymanopt.optimizers.TrustRegions
            if solver == "trust_regions"
            else pymanopt.optimizers.ConjugateGradient
        )
        optimizer = optimizer_cls(
            max_iterations=max_iterations,
            min_gradient_norm=min_gradient_norm,
            max_time=max_time,
            verbosity=verbosity,
        )
        result = optimizer.run(problem, initial_point=start)
        if objective == "infonce":
            self.frame.load_(torch.as_tensor(np.asarray(result.point)))
        else:
            points = [result.point] if len(frames) == 1 else list(result.point)
            targets = [f for f in (self.retained_a, self.retained_b) if f is not None]
            for frame, point in zip(targets, points):
                frame.load_(torch.as_tensor(np.asarray(point)))
        self.fit_result_ = result
        return self

    def extra_repr(self) -> str:
        text = (
            f"text_size={self.text_size}, num_codebooks={self.num_codebooks}, "
            f"code_size={self.code_size}, out_size={self.out_size}, rank_a={self.rank_a}, "
            f"rank_b={self.rank_b}, exact={self.exact}, parametrization={self.parametrization!r}, "
            f"readout_size={self.readout_size}"
        )
        if self.num_tokens is not None:
            text += f", num_tokens={self.num_tokens}"
        return text
