"""Exact global top-k% magnitude thresholds with bounded memory.

The references (TIES, arXiv:2306.01708; TALL masks, arXiv:2405.07813) flatten a whole task
vector and call ``kthvalue``; for ViT-L-14 x 20 tasks that is tens of GB. Here the same number is
found by a radix select over the bit patterns of ``|x|``: non-negative IEEE floats order like
their bit patterns read as integers, so a histogram of the top 16 bits (one pass over the tensors,
read one at a time) locates the bucket of the k-th smallest magnitude, and a histogram of the next
16 bits among the entries of that bucket gives its exact value. float32 needs two passes, float64
four. Tensors come from a callable (or a re-iterable collection) so they can be read lazily, e.g.
from ``safetensors.safe_open``.

The rule matched, exactly, is the reference's ``topk_values_mask``::

    n = numel; kept = int(n * (k / 100))           # number of entries meant to survive
    kth = |x|.kthvalue(n - kept)                    # 1-indexed rank from the bottom
    mask = |x| >= kth                               # ties at the threshold are kept

The threshold entry itself passes ``>=``, so with distinct magnitudes ``kept + 1`` entries survive
(the reference's off-by-one, kept for equality), more with ties at the threshold.
``k = 100`` (``kept == n``) keeps everything (the reference skips the mask; here the threshold is
0.0, which keeps every entry). ``k = 0`` keeps the entries equal to the largest magnitude, as the
reference formula does. Unlike the reference, ``0 < k < 1`` is a percentage here, never a fraction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.tensorwise import release_memory

TensorSource = Callable[[], Iterable[torch.Tensor]] | Iterable[torch.Tensor]

_DIGIT_BITS = 16
_BINS = 1 << _DIGIT_BITS


def kept_count(numel: int, k_percent: float) -> int:
    """Number of entries a top-``k_percent`` trim means to keep: ``int(numel * (k / 100))``."""
    if not 0 <= k_percent <= 100:
        raise ValueError(f"k must be a percentage in [0, 100], got {k_percent}")
    return int(numel * (k_percent / 100))


def threshold_rank(numel: int, k_percent: float) -> int:
    """The 1-indexed rank (from the smallest magnitude) of the threshold; 0 means keep all."""
    return numel - kept_count(numel, k_percent)


def _tensors(source: TensorSource) -> Iterator[torch.Tensor]:
    if callable(source):
        return iter(source())
    iterator = iter(source)
    if iterator is source:
        raise TypeError("tensors must be a callable or a re-iterable collection, not an iterator")
    return iterator


def _abs_bits(tensor: torch.Tensor, width: int, check_nan: bool = True) -> torch.Tensor:
    """Bit patterns of ``|tensor|`` as non-negative int32 (width 32) or int64 (width 64),
    ordered like the magnitudes (``abs`` clears the sign bit)."""
    if width == 64:
        bits = tensor.detach().to(torch.float64).abs().reshape(-1).view(torch.int64)
        nan_floor = 0x7FF0000000000000
    else:
        bits = tensor.detach().to(torch.float32).abs().reshape(-1).view(torch.int32)
        nan_floor = 0x7F800000
    if check_nan and bool((bits > nan_floor).any()):
        raise ValueError("magnitude threshold: the tensors contain NaN")
    return bits


def _histogram(source: TensorSource, width: int, level: int, prefix: int) -> torch.Tensor | None:
    """Counts of the ``level``-th 16-bit digit among entries whose higher digits equal ``prefix``.

    Returns None when ``width`` is 32 and a float64 tensor turns up (the caller restarts at 64).
    """
    shift = width - _DIGIT_BITS * (level + 1)
    hist = np.zeros(_BINS, dtype=np.int64)
    for tensor in _tensors(source):
        if width == 32 and tensor.dtype == torch.float64:
            return None
        bits = _abs_bits(tensor, width, check_nan=level == 0)
        if level:
            bits = bits[(bits >> (shift + _DIGIT_BITS)) == prefix]
            digits = (bits >> shift) & (_BINS - 1) if shift else bits & (_BINS - 1)
        else:
            digits = bits >> shift  # the sign bit is clear: already < _BINS
        hist += np.bincount(digits.cpu().numpy(), minlength=_BINS)
        del tensor, bits, digits
        release_memory()
    return torch.from_numpy(hist)


def _bits_to_float(bits: int, width: int) -> float:
    dtype, itype = (torch.float64, torch.int64) if width == 64 else (torch.float32, torch.int32)
    return float(torch.tensor([bits], dtype=itype).view(dtype).item())


def _select(source: TensorSource, rank_of: Callable[[int], int]) -> float:
    """Radix select: the ``rank_of(numel)``-th smallest magnitude (0.0 when that rank is 0)."""
    width = 32
    hist = _histogram(source, width, 0, 0)
    if hist is None:  # float64 present: compare everything in float64 (float32 embeds exactly)
        width = 64
        hist = _histogram(source, width, 0, 0)
    assert hist is not None
    total = int(hist.sum())
    rank = rank_of(total)
    if rank == 0:
        return 0.0
    if not 1 <= rank <= total:
        raise ValueError(f"rank {rank} is out of range for {total} entries")
    prefix, remaining = 0, rank
    for level in range(width // _DIGIT_BITS):
        if level:
            hist = _histogram(source, width, level, prefix)
            assert hist is not None
        cumulative = hist.cumsum(0)
        digit = int(torch.searchsorted(cumulative, torch.tensor([remaining])).item())
        remaining -= int(cumulative[digit - 1]) if digit else 0
        prefix = (prefix << _DIGIT_BITS) | digit
    return _bits_to_float(prefix, width)


def kth_smallest_magnitude(tensors: TensorSource, rank: int) -> float:
    """The ``rank``-th smallest (1-indexed) of ``|x|`` over all tensors, read one at a time.

    Equal to ``torch.cat([t.flatten() for t in tensors]).abs().kthvalue(rank)`` without the copy.
    float32 inputs take two passes over the tensors, float64 four.
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    return _select(tensors, lambda _total: rank)


def magnitude_threshold(tensors: TensorSource, k_percent: float, extra_zeros: int = 0) -> float:
    """Threshold t such that ``|x| >= t`` keeps the top ``k_percent``% magnitudes of all tensors.

    Args:
        tensors: A callable returning a fresh iterable of tensors (so they can be loaded lazily),
            or a re-iterable collection (list, tuple, dict values). Read once per pass.
        k_percent: Percentage of entries to keep, in [0, 100].
        extra_zeros: Zero entries counted in the population besides the tensors' own (the
            text-side leftovers of the references' checkpoints, see :func:`trim_thresholds`).

    Returns:
        The reference's ``kthvalue(n - int(n * k / 100))`` of the concatenated magnitudes (with
        ``extra_zeros`` zeros appended), as a Python float (exact: float32 values are
        representable); 0.0 when nothing is trimmed.
    """
    kept_count(0, k_percent)  # validates k before any pass over the tensors
    if extra_zeros < 0:
        raise ValueError(f"extra_zeros must be >= 0, got {extra_zeros}")

    def rank_of(total: int) -> int:  # the zeros are the smallest magnitudes: skip past them
        return max(threshold_rank(total + extra_zeros, k_percent) - extra_zeros, 0)

    return _select(tensors, rank_of)


TRIM_SCOPES = ("global", "tensor")


def trim_thresholds(
    vector: Mapping[str, torch.Tensor], k: float, scope: str = "global", extra_zeros: int = 0
) -> dict[str, float]:
    """Per-parameter magnitude thresholds keeping the top ``k``% entries of one task vector.

    The vector is read tensor by tensor (twice for ``"global"``: the radix select's two passes),
    so a lazy vector is never held whole. ``k = 100`` keeps everything: threshold 0.0, no read.

    Args:
        vector: Parameter name -> tensor (one task vector; in memory or lazy).
        k: Percentage kept, in [0, 100].
        scope: ``"global"``: one threshold over the whole vector (the references);
            ``"tensor"``: the top ``k``% of each tensor separately (cheaper variant).
        extra_zeros: ``"global"`` only: zero entries added to the population. The references
            (``nik-dim/tall_masks`` ``src/eval/aggregation.py``, after ``ImageEncoder`` deleted
            only the text ``transformer``) flatten a saved checkpoint that still holds the text
            side's token and positional embeddings, ``ln_final``, ``text_projection`` and
            ``logit_scale``, whose task-vector entries are all zero; so their top-k% keeps
            ``int((n + extra_zeros) * k / 100)`` image entries, more than k% of them.
    """
    if scope not in TRIM_SCOPES:
        raise ConfigError(f"trim_scope must be one of {TRIM_SCOPES}, got {scope!r}")
    kept_count(0, k)  # validates k
    names = list(vector)
    if k == 100:
        return dict.fromkeys(names, 0.0)
    if scope == "global":
        threshold = magnitude_threshold(lambda: (vector[name] for name in names), k, extra_zeros)
        return dict.fromkeys(names, threshold)
    if extra_zeros:
        raise ConfigError("trim_population=checkpoint needs trim_scope=global (as the references)")
    return {name: magnitude_threshold([vector[name]], k) for name in names}
