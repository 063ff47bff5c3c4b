"""Import published fine-tuned checkpoints into taskmerge's layout, safely and atomically.

Sources (see :mod:`taskmerge.interop` for the readers; nothing is ever unpickled as code):

* the TALL-masks / LiNeS / TSV layout (Hugging Face ``nik-dim/tall_masks``):
  ``single_task/<model>/<Task>Val/nonlinear_finetuned.pt``, the pretrained
  ``nonlinear_zeroshot.pt``, heads ``head_<Task>Val.pt`` and
  ``tall_masks/<model>/TALL_mask_{8,14,20}task.npy`` (into the mask store, where
  ``method=tall_mask method.load_mask=true`` and ``method=consensus method.load_mask=true``
  read them);
* the task_vectors / tangent layout: ``checkpoints/<model>/<Task>Val/finetuned.pt`` (pickled
  open_clip 2.x modules), ``linear_finetuned.pt`` (imported as ``finetuning=linear``) and the
  linear-2 repo's ``linear-2_finetuned.pt`` (attention-only, imported as
  ``finetuning=attention``, which ``finetuning=linear-2`` names too);
* FusionBench's ``tanganke/clip-vit-..._<task>`` models (transformers ``CLIPVisionModel``; the
  frozen visual projection is taken from the pretrained model);
* plain open_clip state dicts (``.safetensors`` or weights-only ``.pt``), one task per file.

Each task is written as ``<checkpoints>/<model>/<mode>/<Task>/finetuned.safetensors`` with
taskmerge's header (model, pretrained tag and fingerprint, task, mode) through the checkpoint
store (atomic), and recorded in ``<checkpoints>/<model>/<mode>/manifest.json`` with the sha256
of the source and of the written file. Re-running skips every task whose manifest entry still
matches both (idempotent); a killed import leaves no half-written task. One task is in memory
at a time (sources are memory-mapped), so importing many checkpoints needs about two copies of
one. A source fine-tuned from other pretrained weights than the configured model's (its
zero-shot weights differ) is refused before anything is written.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from taskmerge.data.task_lists import TASK_LISTS
from taskmerge.errors import CheckpointError
from taskmerge.interop.checkpoint_layouts import (
    detect_layout,
    find_heads,
    find_model_dir,
    find_tall_mask_files,
    find_zeroshot,
    finetuned_file,
    fusion_bench_dirs,
    task_folders,
    task_name,
)
from taskmerge.interop.hf_clip import convert_clip_vision
from taskmerge.interop.published_masks import iter_tall_masks, read_packed_masks
from taskmerge.interop.readers import (
    read_head,
    read_linear_checkpoint,
    read_state_dict,
    read_tall_masks_checkpoint,
    read_task_vectors_checkpoint,
)
from taskmerge.io.atomic import write_json
from taskmerge.io.checks import check_shapes
from taskmerge.io.digest import sha256
from taskmerge.io.packed_masks import mask_writer
from taskmerge.io.tensors import StateDict, save_state_dict
from taskmerge.merging.mask_files import published_mask_path
from taskmerge.store.checkpoints import CheckpointStore

log = logging.getLogger(__name__)

#: How close a source's zero-shot weights must be to the configured pretrained weights.
PRETRAINED_TOLERANCE = 1e-5


@dataclass
class Source:
    """One task's checkpoint in a source tree."""

    task: str
    path: Path
    layout: str
    linear: bool = False
    attention: bool = False  # the linear-2 repo's attention-only checkpoint


@dataclass
class Discovery:
    """What a source tree holds for one model."""

    layout: str
    sources: list[Source]
    zeroshot: Path | None = None
    heads: dict[str, Path] = field(default_factory=dict)
    masks: dict[str, Path] = field(default_factory=dict)


def discover(
    root: str | Path,
    model: str,
    layout: str = "auto",
    linear: bool | None = None,
    attention: bool | None = None,
) -> Discovery:
    """Find the checkpoints of ``model`` under ``root``.

    Args:
        layout: ``auto`` or one of :data:`taskmerge.interop.checkpoint_layouts.LAYOUTS`.
        linear: For the tangent layout: import ``linear_finetuned.pt`` (default: when present)
            instead of ``finetuned.pt``.
        attention: For the tangent layout: import the linear-2 repo's ``linear-2_finetuned.pt``
            (default: when present and no ``linear_finetuned.pt`` is).
    """
    root = Path(root).expanduser()
    layout = detect_layout(root) if layout == "auto" else layout
    if layout == "fusion_bench":
        dirs = fusion_bench_dirs(root, model)
        sources = [Source(t, d, layout) for t, d in dirs.items()]
        return Discovery(layout, sources)
    if layout == "open_clip":
        files = [root] if root.is_file() else sorted(root.glob("*.safetensors"))
        return Discovery(layout, [Source(p.stem, p, layout) for p in files])
    model_dir = find_model_dir(root, model)
    folders = task_folders(model_dir)

    def present(name: str) -> bool:
        return layout == "tangent" and any((f / name).is_file() for f in folders.values())

    if linear is None:
        linear = not attention and present(finetuned_file(layout, True))
    if attention is None:
        attention = not linear and present(finetuned_file(layout, attention=True))
    if linear and attention:
        raise CheckpointError("a checkpoint is linearized or attention-only, not both")
    name = finetuned_file(layout, bool(linear), bool(attention))
    sources = [
        Source(task, folder / name, layout, bool(linear), bool(attention))
        for task, folder in folders.items()
        if (folder / name).is_file()
    ]
    return Discovery(
        layout,
        sources,
        zeroshot=find_zeroshot(model_dir, layout, bool(linear), bool(attention)),
        heads=find_heads(model_dir),
        masks=find_tall_mask_files(root, model) if layout == "tall_masks" else {},
    )


def read_layout_file(layout: str, path: Path) -> StateDict:
    """The weights of one non-linear checkpoint file of ``layout`` (the safe legacy readers for
    the reference repos' pickles, the weights-only reader otherwise)."""
    if layout == "tall_masks":
        return read_tall_masks_checkpoint(path)
    if layout in ("task_vectors", "tangent"):
        return read_task_vectors_checkpoint(path)
    return read_state_dict(path)


def read_source(source: Source, pretrained: Mapping[str, torch.Tensor]) -> StateDict:
    """The source's fine-tuned open_clip ``visual`` state dict (theta), cast to the pretrained
    dtypes and checked against its keys and shapes."""
    if source.layout == "fusion_bench":
        state = convert_clip_vision(source.path, projection=pretrained.get("proj"))
    elif source.linear:
        state = read_linear_checkpoint(source.path, pretrained).params
    else:
        state = read_layout_file(source.layout, source.path)
    extra = sorted(set(state) - set(pretrained))
    state = {k: v for k, v in state.items() if k in pretrained}
    check_shapes(
        {k: tuple(v.shape) for k, v in state.items()},
        {k: tuple(v.shape) for k, v in pretrained.items()},
        f"{source.path} ({source.task})",
    )
    if extra:
        log.info("%s: ignored %d keys outside the image encoder", source.path, len(extra))
    return {k: v.detach().to(pretrained[k].dtype).contiguous() for k, v in state.items()}


def check_same_pretrained(
    discovery: Discovery, pretrained: Mapping[str, torch.Tensor], model: str
) -> float | None:
    """The largest relative difference between the source's zero-shot weights and
    ``pretrained`` (None when the source ships none).

    Raises:
        CheckpointError: they differ: task vectors would be taken against the wrong weights.
    """
    if discovery.zeroshot is None:
        return None
    first = discovery.sources[0] if discovery.sources else None
    if first is not None and first.linear:
        zeroshot = read_linear_checkpoint(first.path, pretrained).params0
    else:
        zeroshot = read_layout_file(discovery.layout, discovery.zeroshot)
    worst = 0.0
    for key, value in pretrained.items():
        if key not in zeroshot:
            continue
        other = zeroshot[key].float()
        scale = float(value.float().abs().max()) or 1.0
        worst = max(worst, float((other - value.float()).abs().max()) / scale)
    if worst > PRETRAINED_TOLERANCE:
        raise CheckpointError(
            f"{discovery.zeroshot} differs from the {model} pretrained weights (relative "
            f"{worst:.2e}): these checkpoints were fine-tuned from other weights; import them "
            "with the model they came from (model.pretrained=<their zero-shot weights>)"
        )
    return worst


@dataclass
class ImportReport:
    """What an import did."""

    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)
    pretrained_difference: float | None = None


def import_checkpoints(
    root: str | Path,
    model: str,
    store: CheckpointStore,
    linear_store: CheckpointStore | None = None,
    tasks: Sequence[str] | None = None,
    layout: str = "auto",
    overwrite: bool = False,
    attention_store: CheckpointStore | None = None,
) -> ImportReport:
    """Import every task of ``tasks`` (default: all found) from ``root`` into ``store`` (the
    ``linear`` layout's tasks into ``linear_store``, the linear-2 repo's attention-only ones into
    ``attention_store``). A checkpoint the import did not write
    itself (e.g. one ``finetune.py`` made) is replaced only with ``overwrite``.

    Raises:
        CheckpointError: an unknown layout, a requested task the source lacks, a source from
            other pretrained weights, a file that is not what it should be, or a pickle that
            asks for a global outside the allow-list (naming it): all before anything is
            written, except that tasks already imported stay.
    """
    discovery = discover(root, model, layout)
    order = {task: i for i, task in enumerate(TASK_LISTS["standard"] + TASK_LISTS["demo"])}
    found = sorted((s.task for s in discovery.sources), key=lambda t: (order.get(t, len(order)), t))
    wanted = list(tasks) if tasks else found
    by_task = {s.task: s for s in discovery.sources}
    missing = [t for t in wanted if t not in by_task]
    if missing:
        raise CheckpointError(
            f"{root} has no {model} checkpoint for {missing} ({discovery.layout} layout; it has "
            f"{sorted(by_task)}): import fewer tasks (DATASETS=[...]) or point source elsewhere"
        )
    report = ImportReport()
    report.pretrained_difference = check_same_pretrained(discovery, store.pretrained, model)
    for task in wanted:  # nothing of the user's is replaced: checked before anything is written
        source = by_task[task]
        target = _target(source, store, linear_store, attention_store)
        if not overwrite:
            check_not_foreign(target, task)
    for task in wanted:
        source = by_task[task]
        target = _target(source, store, linear_store, attention_store)
        if import_one(source, target, discovery):
            report.imported.append(task)
        else:
            report.skipped.append(task)
    report.heads = _import_heads(discovery, store, wanted)
    report.masks = _import_masks(discovery, store, wanted)
    return report


def _target(
    source: Source,
    store: CheckpointStore,
    linear_store: CheckpointStore | None,
    attention_store: CheckpointStore | None,
) -> CheckpointStore:
    """The store a source's task goes to (its mode's; ``store`` when that one is not given)."""
    if source.linear and linear_store is not None:
        return linear_store
    if source.attention and attention_store is not None:
        return attention_store
    return store


def _manifest(store: CheckpointStore) -> tuple[Path, dict[str, Any]]:
    """The import manifest ({} when absent; a damaged one is set aside with one warning: every
    task is then checked against its source again)."""
    path = store.layout.manifest
    if not path.is_file():
        return path, {}
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as exc:
        log.warning("%s is unreadable (%s): the import checks every task again", path, exc)
        return path, {}
    return path, manifest


def check_not_foreign(store: CheckpointStore, task: str) -> None:
    """The task's checkpoint is absent or one this import wrote (its manifest entry matches).

    Raises:
        CheckpointError: another checkpoint is there (the user's own): not replaced without
            ``overwrite=true``.
    """
    target = store.path(task)
    if not target.is_file():
        return
    entry = _manifest(store)[1].get(task) or {}
    if entry.get("sha256") != sha256(target):
        raise CheckpointError(
            f"{target} exists and was not written by an import (e.g. finetune.py made it): "
            "import into another paths.checkpoints, or pass overwrite=true to replace it"
        )


def import_one(source: Source, store: CheckpointStore, discovery: Discovery) -> bool:
    """Import one task; False when the manifest shows it is already there, unchanged."""
    file = source.path / "model.safetensors" if source.path.is_dir() else source.path
    source_sum = sha256(file)
    manifest_path, manifest = _manifest(store)
    entry = manifest.get(source.task)
    target = store.path(source.task)
    if (
        entry
        and entry.get("source_sha256") == source_sum
        and target.is_file()
        and sha256(target) == entry.get("sha256")
    ):
        log.info("%s: already imported from %s, unchanged", source.task, file)
        return False
    state = read_source(source, store.pretrained)
    store.save(source.task, state, overwrite=True)
    stale = store.layout.metrics(source.task)  # measured for other weights
    stale.unlink(missing_ok=True)
    manifest[source.task] = {
        "source": str(file),
        "layout": discovery.layout,
        "source_sha256": source_sum,
        "sha256": sha256(target),
        "imported": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(manifest, manifest_path)
    log.info("%s: imported from %s", source.task, file)
    return True


def _import_heads(discovery: Discovery, store: CheckpointStore, tasks: Iterable[str]) -> list[str]:
    """Copy the published zero-shot heads next to their checkpoints (``head.safetensors``, for
    reference: evaluation builds its own heads from the text tower with the same templates)."""
    done = []
    for task in tasks:
        if task in discovery.heads:
            weight, bias = read_head(discovery.heads[task])
            save_state_dict(
                {"weight": weight, "bias": bias},
                store.layout.imported_head(task),
                {"task": task, "source": str(discovery.heads[task])},
            )
            done.append(task)
    return done


def _import_masks(discovery: Discovery, store: CheckpointStore, tasks: Sequence[str]) -> list[str]:
    """Write each published TALL-mask file whose tasks are all imported into the mask store,
    one task at a time (``tall_mask-published-<T>tasks-<hash>.safetensors``)."""
    written = []
    reference = discovery.zeroshot or {f"visual.{k}": v for k, v in store.pretrained.items()}
    for stem, path in discovery.masks.items():
        order = [task_name(t) for t in read_packed_masks(path)]
        if not set(order) <= set(tasks):
            log.info("%s: masks for %s, not all imported: skipped", path, order)
            continue
        stream = iter_tall_masks(path, reference)
        first_task, first = next(stream)
        names = list(first)
        target = published_mask_path(store.mask_dir, order)
        entries = [(t, n, tuple(first[n].shape)) for t in order for n in names]
        with mask_writer(target, order, entries, {"source": str(path)}) as write:
            for task, mask in itertools.chain([(first_task, first)], stream):
                for name in names:
                    write(task, name, mask[name])
        written.append(stem)
    return written
