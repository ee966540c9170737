r"""What the sequence models (:class:`~manifoldnn.models.BDH`, :class:`~manifoldnn.models.GPT`)
share: token-id checks, the sampling loop of ``generate``, the residual-scheme options of their
configurations, and the deprecation path of renamed configuration fields."""

from __future__ import annotations

import dataclasses

import torch

from ..layers.hyper_connections import RESIDUAL_CONSTRAINTS
from ..validation import (
    check_bool,
    check_choice,
    check_positive_int,
    renamed_arguments,
    warn_renamed,
)

__all__ = [
    "AutoregressiveSampling",
    "check_token_ids",
    "check_generation",
    "sample_continuation",
    "sample_next",
    "renamed_config_fields",
    "RESIDUALS",
    "check_residual_options",
]

#: The residual schemes of the sequence models' ``residual`` option.
RESIDUALS = ("prenorm", "postnorm", "deepnorm", "hyper")


def check_residual_options(config) -> None:
    """Check a configuration's ``residual``, ``num_streams``, ``hc_constraint`` and
    ``hc_dynamic`` (:class:`~manifoldnn.layers.HyperConnections`), each error naming its field."""
    check_choice(config.residual, "residual", RESIDUALS)
    check_positive_int(config.num_streams, "num_streams")
    check_choice(config.hc_constraint, "hc_constraint", tuple(RESIDUAL_CONSTRAINTS))
    check_bool(config.hc_dynamic, "hc_dynamic")


def renamed_config_fields(**renames: str):
    """Class decorator of a configuration dataclass whose fields were renamed (``old="new"``): the
    constructor accepts the old keywords with a ``FutureWarning`` (``renamed_arguments``) and the
    old attribute names read the new fields with one."""

    def decorate(cls):
        fields = {field.name for field in dataclasses.fields(cls)}
        missing = set(renames.values()) - fields
        if missing:
            raise TypeError(f"{cls.__name__} has no fields {sorted(missing)}")
        cls.__init__ = renamed_arguments(**renames)(cls.__init__)
        for old, new in renames.items():

            def read(self, old=old, new=new):
                warn_renamed(f"{type(self).__name__}.{old}", f"{type(self).__name__}.{new}")
                return getattr(self, new)

            setattr(cls, old, property(read))
        return cls

    return decorate


class AutoregressiveSampling:
    """``generate`` for a language model that has ``config.vocab_size`` and the two methods
    ``prefill(idx, max_new_tokens, prefill_segment) -> (logits (B, vocab), state)`` and
    ``step(token (B, 1), state, position) -> (logits (B, vocab), state)``."""

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        prefill_segment: int = 1024,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after the prompt ``idx``.

        The prompt is read by :meth:`prefill` (in segments of ``prefill_segment`` tokens where the
        model reads it in chunks), then each new token is one :meth:`step` from the carried state
        (a recurrent state of constant size, or a key/value cache).

        Args:
            idx: prompt ids ``(B, T)`` with ``T >= 1``.
            max_new_tokens: tokens to sample (``>= 0``).
            temperature: softmax temperature (``> 0``). Default: ``1.0``.
            top_k: sample among the ``top_k`` most likely tokens only. Default: ``None`` (all).
            prefill_segment: prompt tokens per chunked call. Default: ``1024``.
            generator: random generator for sampling. Default: ``None`` (the global one).

        Returns:
            The prompt followed by the samples.

        Shape:
            - Output: ``(B, T + max_new_tokens)``.
        """
        idx = check_generation(
            idx, self.config.vocab_size, max_new_tokens, temperature, top_k, prefill_segment
        )
        logits, state = self.prefill(idx, max_new_tokens, prefill_segment)
        return sample_continuation(
            idx, logits, state, self.step, max_new_tokens, temperature, top_k, generator
        )


def check_token_ids(idx: torch.Tensor, vocab_size: int, validate: bool = True) -> torch.Tensor:
    """Validate token ids ``(B, T)`` or ``(T,)`` against the vocabulary; returns them as int64.

    The range check reads the ids on the host: it runs in eager mode when ``validate`` is set and
    is skipped under ``torch.compile``; the dtype and shape checks always run."""
    if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}")
    if idx.dim() not in (1, 2):
        raise ValueError(f"idx must have shape (B, T) or (T,), got {tuple(idx.shape)}")
    # one host read at the boundary; skipped under torch.compile, where it would break the graph
    if validate and not torch.compiler.is_compiling() and idx.numel():
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"token ids must lie in [0, {vocab_size}) (the vocabulary), got values in "
                f"[{low}, {high}]"
            )
    return idx.long()


def check_generation(
    idx: torch.Tensor,
    vocab_size: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    prefill_segment: int,
) -> torch.Tensor:
    """Validate the arguments of ``generate``; returns the prompt as int64 ``(B, T)``."""
    idx = check_token_ids(idx, vocab_size)
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(f"idx must be a non-empty prompt of shape (B, T), got {tuple(idx.shape)}")
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"top_k must be None or a positive integer, got {top_k!r}")
    if (
        isinstance(prefill_segment, bool)
        or not isinstance(prefill_segment, int)
        or prefill_segment <= 0
    ):
        raise ValueError(f"prefill_segment must be a positive integer, got {prefill_segment!r}")
    return idx


def sample_continuation(
    idx: torch.Tensor,
    logits: torch.Tensor,
    state,
    step,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The decoding loop shared by the models' ``generate``: sample a token from ``logits``
    ``(B, vocab)``, feed it to ``step(token, state, position) -> (logits, state)``, repeat
    ``max_new_tokens`` times; returns the prompt ``idx`` ``(B, T)`` followed by the samples."""
    out, position = [idx], idx.shape[1]
    for _ in range(max_new_tokens):
        token = sample_next(logits, temperature, top_k, generator)
        out.append(token)
        logits, state = step(token, state, position)
        position += 1
    return torch.cat(out, dim=1)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample one token id per row of ``logits`` ``(B, V)``; returns ``(B, 1)``."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        threshold = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
