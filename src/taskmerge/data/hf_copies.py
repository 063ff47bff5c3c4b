"""Reading a task from a local copy of a Hugging Face dataset repository (never the network).

Hugging Face copies (FusionBench's ``tanganke/*`` and the other repositories each task lists in
its ``hf_sources``, see :mod:`taskmerge.data.standard_tasks`) are used when none of the task's
native layouts is present. For each source, in order, they are looked for in

* ``<root>/<org>/<name>/``, as written by ``huggingface-cli download --repo-type dataset
  <org>/<name> --local-dir <root>/<org>/<name>``: parquet or webdataset ``.tar`` files whose path
  names the split (a folder or a file name starting with it), or a ``save_to_disk`` directory
  (``dataset_dict.json``);
* a hub-cache layout (``datasets--<org>--<name>/snapshots/*``) directly under ``<root>``, then the
  Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``), newest snapshot first.

The ``"test"`` split is also found under the names ``validation`` and ``valid``. The files are read
through ``datasets``' packaged builders directly (``load_dataset`` would contact the Hub). The image
and label columns are picked by type or by usual names; labels are checked against the task's class
count and remapped where a copy orders classes differently (``clip-benchmark/wds_fer2013``), either
by the source's explicit ``label_map`` or by matching the copy's label names to the task's class
names or their aliases.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from taskmerge.data.image_datasets import HFImageDataset
from taskmerge.errors import DataNotFoundError

__all__ = ["HFSource", "load_hf_copy", "locate_hf_copy"]


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face dataset repository holding a copy of one task.

    Attributes:
        repo: ``"<org>/<name>"`` on the Hub.
        config: Sub-directory (dataset config) the files must lie under, if the repo has several.
        label_map: ``label_map[source_label]`` is the task's label, when the copy orders classes
            differently; ``None`` keeps labels (after checking the class count).
    """

    repo: str
    config: str | None = None
    label_map: tuple[int, ...] | None = None


_HF_SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "test": ("test", "validation", "valid"),
    "val": ("validation", "val", "valid"),
}
_HF_IMAGE_KEYS = ("image", "img", "jpg", "png", "webp", "img_bytes")
_HF_LABEL_KEYS = ("fine_label", "label", "labels", "cls")


def load_hf_copy(
    task: str,
    sources: Sequence[HFSource],
    classnames: Sequence[str],
    aliases: Sequence[Sequence[str]],
    root: Path,
    split: str,
) -> Dataset | None:
    """The split from the first local Hugging Face copy of the task, or None.

    Args:
        task: Task name, for error messages.
        sources: The task's repositories, in order of preference.
        classnames: The task's class names in label order (the class count is checked).
        aliases: Other spellings of the class names (same order) to match a copy's label names.
        root: Data root.
        split: ``"train"``, ``"test"`` or ``"val"``.
    """
    for source in sources:
        for directory in _hf_dirs(root, source.repo):
            table = _open_hf_table(directory, source, split)
            if table is None:
                continue
            image_key = _pick_key(table, _HF_IMAGE_KEYS, "image", task, directory)
            label_key = _pick_key(table, _HF_LABEL_KEYS, "label", task, directory)
            label_map = _hf_label_map(
                task, table, label_key, source, directory, classnames, aliases
            )
            return HFImageDataset(table, image_key, label_key, label_map)
    return None


def locate_hf_copy(sources: Sequence[HFSource], root: Path, split: str) -> str | None:
    """Where :func:`load_hf_copy` would read ``split`` from, without reading it, or None."""
    for source in sources:
        for directory in _hf_dirs(root, source.repo):
            if (directory / "dataset_dict.json").is_file() or any(
                _hf_files(directory, name, source.config) for name in _HF_SPLIT_NAMES[split]
            ):
                return f"{directory} (Hugging Face {source.repo})"
    return None


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return Path(hf_home).expanduser() / "hub"


def _hf_dirs(root: Path, repo: str) -> list[Path]:
    """Local directories that may hold a copy of ``repo``: ``root/<org>/<name>``, hub caches."""
    org, name = repo.split("/")
    dirs = [root / org / name]
    for cache in (root, _hub_cache()):
        snapshots = cache / f"datasets--{org}--{name}" / "snapshots"
        if snapshots.is_dir():
            dirs.extend(sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True))
    return [d for d in dirs if d.is_dir()]


def _names_split(relative: Path, split: str) -> bool:
    if split in relative.parts[:-1]:
        return True
    stem = relative.name.split(".")[0]
    return stem == split or bool(re.match(rf"{re.escape(split)}[-_.]", relative.name))


def _hf_files(directory: Path, split: str, config: str | None) -> tuple[str, list[Path]] | None:
    """(builder, files) of one split in a downloaded HF repo, or None."""
    for builder, pattern in (("parquet", "*.parquet"), ("webdataset", "*.tar")):
        files = []
        for path in sorted(directory.rglob(pattern)):
            relative = path.relative_to(directory)
            if config is not None and config not in relative.parts[:-1]:
                continue
            if _names_split(relative, split):
                files.append(path)
        if files:
            return builder, files
    return None


def _open_hf_table(directory: Path, source: HFSource, split: str) -> Any | None:
    """The split as a ``datasets.Dataset`` from ``directory``, or None if it is not there."""
    import datasets

    if (directory / "dataset_dict.json").is_file():
        saved = datasets.load_from_disk(str(directory))
        name = next((n for n in _HF_SPLIT_NAMES[split] if n in saved), None)
        return saved[name] if name else None
    for name in _HF_SPLIT_NAMES[split]:
        found = _hf_files(directory, name, source.config)
        if found is not None:
            builder, files = found
            if builder == "parquet":
                return datasets.Dataset.from_parquet([str(f) for f in files], split=name)
            return _read_packaged(builder, files, name)
    return None


def _read_packaged(builder: str, files: Sequence[Path], split: str) -> Any:
    """Local files through a packaged ``datasets`` builder, without ``load_dataset``.

    ``load_dataset`` pings the Hub to count downloads even for local files; building the
    packaged builder directly touches only the files (and the ``datasets`` cache).
    """
    from datasets.load import import_main_class
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    module_path, module_hash = _PACKAGED_DATASETS_MODULES[builder]
    reader = import_main_class(module_path)(
        data_files={split: [str(f) for f in files]}, hash=module_hash
    )
    reader.download_and_prepare()
    return reader.as_dataset(split=split)


def _normalise(name: str) -> str:
    return " ".join(re.sub(r"[_\-/]", " ", str(name)).lower().split())


def _hf_label_map(
    task: str,
    table: Any,
    label_key: str,
    source: HFSource,
    where: Path,
    expected: Sequence[str],
    aliases: Sequence[Sequence[str]],
) -> tuple[int, ...] | None:
    """Labels of the copy -> task labels (None: identity), after checking the class count.

    ``expected`` are the task's class names in label order, ``aliases`` other spellings of them
    (same order) that a copy's label names may use.
    """
    if source.label_map is not None:
        return source.label_map
    names = getattr(table.features[label_key], "names", None)
    if names is None:
        return None
    if len(names) != len(expected):
        raise DataNotFoundError(
            f"{task}: the Hugging Face copy at {where} has {len(names)} classes, expected "
            f"{len(expected)}"
        )
    theirs = [_normalise(n) for n in names]
    for candidate in (expected, *aliases):
        ours = {_normalise(n): i for i, n in enumerate(candidate)}
        if set(theirs) == set(ours):
            remap = tuple(ours[n] for n in theirs)
            return None if remap == tuple(range(len(remap))) else remap
    return None  # names not comparable: keep the copy's labels


def _pick_key(table: Any, preferred: Sequence[str], kind: str, task: str, where: Path) -> str:
    columns = list(table.column_names)
    if kind == "image":
        from datasets import Image as HFImage

        typed = [c for c in columns if isinstance(table.features[c], HFImage)]
        if typed:
            return typed[0]
    for key in preferred:
        if key in columns:
            return key
    raise DataNotFoundError(f"{task}: no {kind} column in the Hugging Face copy at {where}")
