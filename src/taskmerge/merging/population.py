"""Over which entries a top-k% trim is taken (TIES, magnitude masks, the TIES of TALL masks and
Consensus).

``trim_population="image"`` (taskmerge's own): the image tower's entries, so k=20 keeps 20% of
them. ``"checkpoint"``: the references' population (``nik-dim/tall_masks``
``src/eval/aggregation.py`` flattens the saved ``ImageEncoder`` checkpoint, from which
``src/models/modeling.py`` deletes only the text ``transformer``): the text side's leftovers
(token and positional embeddings, ``ln_final``, ``text_projection``, ``logit_scale``) join the
population with task-vector entries that are all zero, so k=20 keeps 25.83% of ViT-B-32's image
weights (22.54% of ViT-L-14's). Their count is the model's own
(:attr:`taskmerge.models.clip.ClipBundle.text_side_entries`), never a fixed percentage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.streaming import kept_count

TrimPopulation = Literal["image", "checkpoint"]
TRIM_POPULATIONS = ("image", "checkpoint")


def population_zeros(population: str, text_side_entries: int | None) -> int:
    """The zero entries a trim adds to each task vector's population."""
    if population not in TRIM_POPULATIONS:
        raise ConfigError(f"trim_population must be one of {TRIM_POPULATIONS}, got {population!r}")
    if population == "image":
        return 0
    if text_side_entries is None:
        raise ConfigError(
            "trim_population=checkpoint needs the model's text side (the references' checkpoint "
            "population): run it from main.py, or give the API a whole CLIP as pretrained"
        )
    return int(text_side_entries)


def image_fraction_kept(numel: int, k: float, extra_zeros: int) -> float:
    """The fraction of ``numel`` image entries a top-``k``% trim over ``numel + extra_zeros``
    entries means to keep (the references' ``int(n * k / 100)``; at most 1)."""
    if numel <= 0:
        return 1.0
    return min(kept_count(numel + extra_zeros, k) / numel, 1.0) if k < 100 else 1.0


def vector_numel(vector: Mapping[str, torch.Tensor]) -> int:
    """Entries of one task vector (shapes only: a lazy vector is not read)."""
    shape = getattr(vector, "shape", None)  # LazyTaskVector: from the file's header
    if callable(shape):
        return sum(int(shape(name).numel()) for name in vector)
    return sum(int(vector[name].numel()) for name in vector)


def trim_details(population: str, kept: float | None) -> dict[str, object]:
    """What ``results.json`` records of a trim: its population and the fraction of each task's
    image weights it keeps (before ties at the threshold)."""
    out: dict[str, object] = {"trim_population": population}
    if kept is not None:
        out["image_weights_kept"] = round(kept, 6)
    return out
