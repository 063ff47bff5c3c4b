"""TALL mask files of tall_masks / LiNeS / TSV (``TALL_mask_<n>task[_use_ties_<agg>].npy``).

What the references write: a dict ``{task: np.packbits(flat_mask)}`` with one uint8 array per task
(task names without ``Val``, in the order of the task list). ``flat_mask`` covers every tensor of
the zero-shot checkpoint ``nonlinear_zeroshot.pt`` (an ``ImageEncoder`` state dict: ``model.*``,
text leftovers included), the tensors taken in sorted key order and flattened. LiNeS saves the dict
with ``np.save`` (a pickled object array inside a real ``.npy``); tall_masks' loader expects a
``torch.save`` archive under the same name. Both are read here without running pickled code: the
``.npy`` payload by an unpickler that can only rebuild numpy arrays, the torch archive through
torch's weights-only loader.
"""

from __future__ import annotations

import codecs
import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskmerge.errors import CheckpointError
from taskmerge.interop.keys import shape_of
from taskmerge.interop.readers import read_raw
from taskmerge.io.safe_pickle import load_legacy

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_VISUAL = "model.visual."


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only what a numpy array needs; every other global is refused."""

    _reconstruct = np.zeros(0).__reduce__()[0]
    _allowed: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _read_npy(path: Path) -> Any:
    with path.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise CheckpointError(f"{path}: unsupported .npy version {version}")
        if not dtype.hasobject:
            raise CheckpointError(
                f"{path} holds a bare {dtype} array of shape {shape}, not the dict of packed "
                "masks per task that the references save"
            )
        try:
            array = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
        except Exception as exc:  # noqa: BLE001 - refused global or corrupt payload
            raise CheckpointError(f"{path}: refused or unreadable pickled payload ({exc})") from exc
    return array.item() if isinstance(array, np.ndarray) and array.shape == () else array


def read_packed_masks(path: str | Path) -> dict[str, np.ndarray]:
    """The packed masks of a TALL mask file, ``{task: uint8 array}`` in file order (``Val`` cut)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"mask file not found: {path}")
    with path.open("rb") as handle:
        magic = handle.read(6)
    if magic.startswith(_NPY_MAGIC):
        obj = _read_npy(path)
    elif magic.startswith(_ZIP_MAGIC):
        obj = load_legacy(path, allow_numpy=True)
    else:
        raise CheckpointError(f"{path} is neither a .npy file nor a torch.save archive")
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} does not hold a dict of packed masks per task")
    out = {}
    for task, packed in obj.items():
        array = packed.numpy() if isinstance(packed, torch.Tensor) else np.asarray(packed)
        if array.dtype != np.uint8:
            raise CheckpointError(f"{path}: mask of {task} is {array.dtype}, expected packed uint8")
        name = str(task)
        out[name[:-3] if name.endswith("Val") else name] = array.reshape(-1)
    return out


Layout = list[tuple[str, tuple[int, ...]]]


def mask_layouts(reference: str | Path | Mapping[str, Any]) -> list[Layout]:
    """The candidate ``(legacy key, shape)`` lists the flat masks may cover, in sorted-key order.

    ``reference`` is the ``nonlinear_zeroshot.pt`` the masks were built against (a path or its
    loaded dict, keys ``model.*``): one candidate, exactly its keys. Or the open_clip CLIP state
    dict of the same model: two candidates, the references' ``ImageEncoder`` state dict (text
    transformer dropped, text leftovers kept, ``model.`` prefixed) and its image tower alone.
    """
    state = read_raw(reference) if isinstance(reference, str | Path) else reference
    if any(key.startswith("model.") for key in state):
        candidates = [dict(state)]
    else:
        encoder = {f"model.{k}": v for k, v in state.items() if not k.startswith("transformer.")}
        tower = {k: v for k, v in encoder.items() if k.startswith(_VISUAL)}
        candidates = [encoder, tower] if tower and len(tower) < len(encoder) else [encoder]
    return [[(key, shape_of(c[key])) for key in sorted(c)] for c in candidates]


def _bits(layout: Layout) -> int:
    return sum(int(np.prod(shape, dtype=np.int64)) for _, shape in layout)


def iter_tall_masks(
    path: str | Path,
    reference: str | Path | Mapping[str, Any],
    tasks: Sequence[str] | None = None,
) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """Yield ``(task, {open_clip visual name: bool mask})`` one task at a time.

    Only the image tower's bits are unpacked (text-leftover bits are skipped). ``tasks`` picks
    tasks by name (``Val`` optional); all tasks by default, in file order. The reference layout
    (see :func:`mask_layouts`) is the one whose bit count the packed masks fit.

    Raises:
        CheckpointError: if the bit count does not fit the reference, or a task is missing.
    """
    packed = read_packed_masks(path)
    wanted = [t[:-3] if t.endswith("Val") else t for t in tasks] if tasks else list(packed)
    missing = [t for t in wanted if t not in packed]
    if missing:
        raise CheckpointError(f"{path} has no mask for {missing} (it has {list(packed)})")
    sizes = {packed[task].size for task in wanted}
    layouts = [lay for lay in mask_layouts(reference) if {(_bits(lay) + 7) // 8} == sizes]
    if not layouts:
        needed = " or ".join(str(_bits(lay)) for lay in mask_layouts(reference))
        raise CheckpointError(
            f"{path}: its masks have {sorted(8 * n for n in sizes)} bits but the reference "
            f"needs {needed}: pass the nonlinear_zeroshot.pt (or the open_clip CLIP state dict) "
            "of the model the masks were built for"
        )
    for task in wanted:
        yield task, _unpack_visual(packed[task], layouts[0])


def _unpack_visual(bits: np.ndarray, layout: Layout) -> dict[str, torch.Tensor]:
    out = {}
    offset = 0
    for key, shape in layout:
        count = int(np.prod(shape, dtype=np.int64))
        if key.startswith(_VISUAL):
            first, last = offset // 8, (offset + count + 7) // 8
            flat = np.unpackbits(bits[first:last])[offset - 8 * first :][:count]
            out[key[len(_VISUAL) :]] = torch.from_numpy(flat.view(np.bool_)).reshape(shape)
        offset += count
    return out


def read_tall_mask_file(
    path: str | Path,
    reference: str | Path | Mapping[str, Any],
    tasks: Sequence[str] | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """``{task: {open_clip visual name: bool mask}}``; see :func:`iter_tall_masks`."""
    return dict(iter_tall_masks(path, reference, tasks))
