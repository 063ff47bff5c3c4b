"""Which reference layout a folder holds, and where its models, tasks, heads and masks lie.

Layouts (``detect_layout``):

* ``tall_masks`` (also LiNeS / TSV; Hugging Face ``nik-dim/tall_masks``):
  ``[single_task/]<model>/<Task>Val/nonlinear_finetuned.pt``,
  ``.../MNISTVal/nonlinear_zeroshot.pt``, ``<model>/head_<Task>Val.pt``,
  ``tall_masks/<model>/TALL_mask_<n>task.npy``.
* ``tangent``: ``checkpoints/<model>/<Task>Val/{linear_,}{finetuned,zeroshot}.pt``; the
  linear-2 repo (kyrie-23/linear_task_arithmetic ``src/finetune.py``) writes its attention-only
  checkpoints beside them as ``linear-2_{finetuned,zeroshot}.pt``.
* ``task_vectors``: ``checkpoints/<model>/<Task>[Val]/finetuned.pt`` with ``zeroshot.pt`` beside
  the task folders or inside them.
* ``fusion_bench``: ``clip-vit-<size>_<task>/{config.json,model.safetensors}`` folders (also under
  ``tanganke/`` or in the hub cache as ``models--tanganke--clip-vit-..._<task>/snapshots/<rev>/``).
* ``open_clip``: plain ``.safetensors`` / ``.pt`` state dicts.

Model folders are matched case-insensitively (one release spells ``VIT-B-16``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from taskmerge.errors import CheckpointError
from taskmerge.interop.hf_clip import FUSION_BENCH_MODELS, parse_fusion_bench_repo

TALL_MASKS = "tall_masks"
TANGENT = "tangent"
TASK_VECTORS = "task_vectors"
FUSION_BENCH = "fusion_bench"
OPEN_CLIP = "open_clip"
LAYOUTS = (TALL_MASKS, TANGENT, TASK_VECTORS, FUSION_BENCH, OPEN_CLIP)

_MAX_DEPTH = 6
_MASK_FILE = re.compile(r"^TALL_mask_.*\.npy$")
_FUSION_DIR = re.compile(rf"({'|'.join(FUSION_BENCH_MODELS.values())})_[\w.-]+$")


def _walk(root: Path) -> list[tuple[Path, list[str]]]:
    """``(folder, file names)`` under ``root``, at most ``_MAX_DEPTH`` levels down."""
    out = []
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        if depth >= _MAX_DEPTH:
            dirs[:] = []
        dirs.sort()
        out.append((Path(folder), sorted(files)))
    return out


def detect_layout(root: str | Path) -> str:
    """The layout of the checkpoints under ``root`` (one of :data:`LAYOUTS`).

    Raises:
        CheckpointError: if ``root`` is missing or holds none of the known layouts.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise CheckpointError(f"checkpoint folder not found: {root}")
    names: set[str] = set()
    fusion = False
    for folder, files in [(root.parent, [root.name])] if root.is_file() else _walk(root):
        names.update(files)
        if {"config.json", "model.safetensors"} <= set(files) and any(
            _FUSION_DIR.search(part) for part in folder.parts
        ):
            fusion = True
    if names & {"nonlinear_finetuned.pt", "nonlinear_zeroshot.pt"} or any(
        _MASK_FILE.match(n) for n in names
    ):
        return TALL_MASKS
    if names & {"linear_finetuned.pt", "linear_zeroshot.pt", LINEAR_2_FILE}:
        return TANGENT
    if names & {"finetuned.pt", "zeroshot.pt"}:
        return TASK_VECTORS
    if fusion:
        return FUSION_BENCH
    if any(n.endswith((".safetensors", ".pt", ".pth", ".bin")) for n in names):
        return OPEN_CLIP
    raise CheckpointError(
        f"no known checkpoint layout under {root} (looked for nonlinear_finetuned.pt, "
        "finetuned.pt, linear_finetuned.pt, FusionBench model folders and state-dict files)"
    )


def task_name(folder: str) -> str:
    """The task of a reference task folder or file stem: ``MNISTVal`` -> ``MNIST``."""
    return folder[:-3] if folder.endswith("Val") and len(folder) > 3 else folder


def find_model_dir(root: str | Path, model: str) -> Path:
    """The folder of ``model`` under ``root``, spelled in any case.

    Looked for: ``root`` itself, ``<model>``, ``single_task/<model>``, ``checkpoints/<model>``
    and ``model_checkpoints/<model>``.
    """
    root = Path(root).expanduser()
    if root.is_dir() and root.name.casefold() == model.casefold():
        return root
    looked = []
    for sub in ("", "single_task", "checkpoints", "model_checkpoints"):
        parent = root / sub if sub else root
        looked.append(str(parent / model))
        if parent.is_dir():
            for child in sorted(parent.iterdir()):
                if child.is_dir() and child.name.casefold() == model.casefold():
                    return child
    raise CheckpointError(f"no folder for {model} under {root} (looked at {', '.join(looked)})")


#: The linear-2 repo's attention-only checkpoint (``--finetuning-mode=linear-2``).
LINEAR_2_FILE = "linear-2_finetuned.pt"
_CHECKPOINT_FILES = ("nonlinear_finetuned.pt", "finetuned.pt", "linear_finetuned.pt",
                     LINEAR_2_FILE)  # fmt: skip


def task_folders(model_dir: str | Path) -> dict[str, Path]:
    """``{task: folder}`` of the task folders (holding a fine-tuned checkpoint) of a model folder.

    Raises:
        CheckpointError: if one task has two folders (e.g. ``MNIST`` and ``MNISTVal``).
    """
    out: dict[str, Path] = {}
    for child in sorted(Path(model_dir).expanduser().iterdir()):
        if child.is_dir() and any((child / name).is_file() for name in _CHECKPOINT_FILES):
            task = task_name(child.name)
            if task in out:
                raise CheckpointError(f"two folders for {task}: {out[task]} and {child}")
            out[task] = child
    return out


def finetuned_file(layout: str, linear: bool = False, attention: bool = False) -> str:
    """The file name of a task's fine-tuned checkpoint in ``layout`` (``attention``: the
    linear-2 repo's attention-only one)."""
    if layout == TALL_MASKS:
        return "nonlinear_finetuned.pt"
    if attention:
        return LINEAR_2_FILE
    return "linear_finetuned.pt" if linear else "finetuned.pt"


def find_zeroshot(
    model_dir: str | Path, layout: str, linear: bool = False, attention: bool = False
) -> Path | None:
    """The pretrained checkpoint of a model folder: beside the task folders, in ``MNISTVal``
    (where tall_masks keeps it) or in the first task folder holding one; None if absent."""
    name = finetuned_file(layout, linear, attention).replace("finetuned", "zeroshot")
    model_dir = Path(model_dir).expanduser()
    folders = task_folders(model_dir)
    candidates = [model_dir / name]
    candidates += [folders[t] / name for t in ["MNIST", *sorted(folders)] if t in folders]
    return next((path for path in candidates if path.is_file()), None)


def find_heads(model_dir: str | Path) -> dict[str, Path]:
    """``{task: head file}`` of the ``head_<Task>[Val].pt`` files of a model folder."""
    out = {}
    for path in sorted(Path(model_dir).expanduser().glob("head_*.pt")):
        out[task_name(path.stem[len("head_") :])] = path
    return out


def find_tall_mask_files(root: str | Path, model: str) -> dict[str, Path]:
    """``{file stem: path}`` of the TALL mask files of ``model`` (``tall_masks/<model>/``)."""
    root = Path(root).expanduser()
    out: dict[str, Path] = {}
    for base in (root / "tall_masks", root):
        try:
            folder = find_model_dir(base, model)
        except CheckpointError:
            continue
        for path in sorted(folder.iterdir()):
            if _MASK_FILE.match(path.name):
                out.setdefault(path.stem, path)
    return out


def fusion_bench_dirs(root: str | Path, model: str) -> dict[str, Path]:
    """``{taskmerge task: folder}`` of the FusionBench checkpoints of ``model`` under ``root``.

    Folders of tasks taskmerge does not have (``emnist_letters``) are skipped here; reading one
    through :func:`taskmerge.interop.hf_clip.parse_fusion_bench_repo` says why.
    """
    out: dict[str, Path] = {}
    for folder, files in _walk(Path(root).expanduser()):
        if not {"config.json", "model.safetensors"} <= set(files):
            continue
        named = next((p for p in reversed(folder.parts) if _FUSION_DIR.search(p)), None)
        if named is None:
            continue
        try:
            found_model, task = parse_fusion_bench_repo(named)
        except CheckpointError:
            continue
        if found_model == model:
            if task in out:
                raise CheckpointError(f"two folders for {model} {task}: {out[task]} and {folder}")
            out[task] = folder
    return out
