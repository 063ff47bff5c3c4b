"""Bounded-memory merging: lazy task vectors read from safetensors give exactly the in-memory
results for every method, no method holds more than a few task tensors at once whatever the
number of tasks, and TALL masks are saved and reloaded (``load_mask``)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from taskmerge.errors import CheckpointError, ConfigError
from taskmerge.finetune.modes import FinetuningMode
from taskmerge.io.digest import fingerprint
from taskmerge.io.packed_masks import MaskFileError, load_masks, mask_writer, save_masks
from taskmerge.io.tensors import save_state_dict
from taskmerge.merging.mask_files import tall_mask_path
from taskmerge.merging.mask_methods import Consensus, TallMask
from taskmerge.merging.registry import method_spec, method_specs
from taskmerge.merging.tensorwise import DerivedStateDict
from taskmerge.store.checkpoints import CheckpointStore
from taskmerge.vectors.lazy import LazyTaskVector
from taskmerge.vectors.task_vector import TaskVector
from tests.helpers.checkpoints import SHAPES, write_checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")


def in_memory(pretrained: dict, paths: Mapping[str, Path]) -> dict[str, TaskVector]:
    return {
        task: TaskVector.from_state_dicts(pretrained, load_file(str(path)))
        for task, path in paths.items()
    }


def lazy(pretrained: dict | Path, paths: Mapping[str, Path]) -> dict[str, TaskVector]:
    return {task: TaskVector.lazy(pretrained, path) for task, path in paths.items()}


def outputs(method, pretrained: dict, task_vectors: Mapping[str, TaskVector]) -> list:  # noqa: ANN001
    """Every candidate's weights as plain dicts (per task where the method gives one per task)."""
    result = []
    for candidate in method.candidates(pretrained, task_vectors):
        if candidate.per_task:
            result.append({t: dict(candidate.for_task(t)) for t in task_vectors})
        else:
            result.append(dict(candidate.shared))
    return result


def assert_same(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, Mapping):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    else:
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)


#: Small grids keep these tests short; a registered method not listed runs with its defaults.
SETTINGS: dict[str, dict] = {
    "sum": {"grid": [0.3, 1.0]},
    "ties": {"k": 20, "agg": "mean", "grid": [0.5]},
    "tall_mask": {"tall_mask_lambda": [0.2, 0.6]},
    "consensus": {"prun_thre_k": 2, "grid": [0.7]},
    "mag_masking": {"k": 30},
    "negation": {"grid": [0.5]},
    "TSVM": {"grid": [1.0]},
    "TSVM_2": {"grid": [1.0]},
    "iso_c": {"grid": [1.0]},
    "iso_cts": {"grid": [1.0]},
    "dare": {"grid": [0.5]},
    "dare_ties": {"grid": [0.5]},
    "breadcrumbs": {"density": 0.5, "gamma": 0.1, "grid": [0.5]},
    "magmax": {"grid": [0.5]},
    "pcb": {"pcb_ratio": 0.3, "grid": [1.0]},
}
#: Variants beyond each method's defaults.
VARIANTS: dict[str, tuple[str, dict]] = {
    "ties-sum-tensor": ("ties", {"k": 50, "agg": "sum", "trim_scope": "tensor", "grid": [0.5]}),
    "tall_mask-ties": ("tall_mask", {"tall_mask_lambda": [0.4], "use_ties": True}),
    "consensus-ties": ("consensus", {"prun_thre_k": 1, "use_ties": True, "grid": [0.7]}),
    "dare_ties-mean": ("dare_ties", {"p": 0.3, "k": 50, "agg": "mean", "grid": [0.5]}),
}


def methods() -> dict[str, object]:
    """Every registered method (and the variants), built from the registry."""
    built = {  # the methods that learn from data have their own tests (tests/adapt/)
        name: spec.factory(**SETTINGS.get(name, {}))
        for name, spec in method_specs().items()
        if not spec.needs_data
    }
    for label, (name, options) in VARIANTS.items():
        built[label] = method_spec(name).factory(**options)
    return built


@pytest.mark.parametrize("name", list(methods()))
def test_lazy_and_in_memory_give_identical_results(tmp_path: Path, name: str) -> None:
    pretrained, paths = write_checkpoints(tmp_path, 3)
    reference = outputs(methods()[name], pretrained, in_memory(pretrained, paths))
    base_path = tmp_path / "pretrained.safetensors"
    save_state_dict(pretrained, base_path)
    for base in (pretrained, base_path):  # pretrained in memory, or read lazily too
        task_vectors = lazy(base, paths)
        assert all(tv.is_lazy for tv in task_vectors.values())
        assert_same(outputs(methods()[name], pretrained, task_vectors), reference)


def test_lazy_task_vector_checks_headers_and_skips_integer_buffers(tmp_path: Path) -> None:
    pretrained, paths = write_checkpoints(tmp_path, 1)
    vector = LazyTaskVector(paths["Task0"], pretrained)
    assert "position_ids" not in vector and len(vector) == len(SHAPES)
    assert vector.shape("conv1.weight") == torch.Size(SHAPES["conv1.weight"])
    tuned = load_file(str(paths["Task0"]))
    assert torch.equal(
        vector["blocks.0.bias"], tuned["blocks.0.bias"] - pretrained["blocks.0.bias"]
    )
    other = dict(pretrained) | {"blocks.0.bias": torch.zeros(6)}
    with pytest.raises(CheckpointError, match="blocks.0.bias has shape"):
        LazyTaskVector(paths["Task0"], other)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        LazyTaskVector(tmp_path / "missing.safetensors", pretrained)


# --------------------------------------------------------------------------- bounded memory
class Tracked(Mapping[str, torch.Tensor]):
    """A task vector whose every lookup returns a fresh tensor counted while it is alive."""

    alive = 0
    peak = 0
    reads = 0

    def __init__(self, vector: Mapping[str, torch.Tensor]) -> None:
        self._vector = vector

    @classmethod
    def reset(cls) -> None:
        cls.alive = cls.peak = cls.reads = 0

    @classmethod
    def _release(cls) -> None:
        cls.alive -= 1

    def __getitem__(self, key: str) -> torch.Tensor:
        tensor = self._vector[key].clone()
        cls = type(self)
        cls.alive += 1
        cls.reads += 1
        cls.peak = max(cls.peak, cls.alive)
        weakref.finalize(tensor, cls._release)
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._vector)

    def __len__(self) -> int:
        return len(self._vector)


def peak_alive(method, count: int) -> int:  # noqa: ANN001
    """The most task tensors alive at once while merging and materialising every candidate."""
    gen = torch.Generator().manual_seed(count)
    pretrained = {name: torch.zeros(shape) for name, shape in SHAPES.items()}
    task_vectors = {
        f"T{i}": TaskVector(Tracked({n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}))
        for i in range(count)
    }
    Tracked.reset()
    for candidate in method.candidates(pretrained, task_vectors):
        for task in task_vectors if candidate.per_task else [None]:
            state = candidate.for_task(task) if task else candidate.shared
            dict(state)  # evaluation materialises one model at a time
    # the tasks were read through the wrapper (zeroshot reads none, single_task one)
    assert Tracked.reads >= {"zeroshot": 0, "single_task": 1, "negation": 1}.get(method.name, count)
    return Tracked.peak


@pytest.mark.parametrize("name", list(methods()))
def test_task_tensors_alive_at_once_do_not_grow_with_tasks(name: str) -> None:
    few, many = peak_alive(methods()[name], 2), peak_alive(methods()[name], 7)
    assert many == few and many <= 3, (few, many)


# --------------------------------------------------------------------------- saved masks
def test_tall_mask_saves_masks_in_the_store_mask_dir_and_reloads_them(tmp_path: Path) -> None:
    pretrained, paths = write_checkpoints(tmp_path, 3)
    mask_dir = store_of(tmp_path, pretrained).mask_dir
    assert mask_dir == tmp_path / "model" / "standard" / "masks"
    method = TallMask(tall_mask_lambda=[0.3, 0.5]).bind(None, list(paths), mask_dir=mask_dir)
    computed = outputs(method, pretrained, lazy(pretrained, paths))
    files = sorted(p.name for p in mask_dir.iterdir())
    assert len(files) == 2 and files[0].startswith("tall_mask-sum-k100-lambda0.3-3tasks-")
    reloaded = TallMask(tall_mask_lambda=[0.3, 0.5], load_mask=True)
    reloaded.bind(None, list(paths), mask_dir=mask_dir)
    for p in paths.values():  # the masks must not need the checkpoints' tensors any more
        assert p.is_file()
    assert_same(outputs(reloaded, pretrained, lazy(pretrained, paths)), computed)
    # the files are plain safetensors with the documented layout
    masks = load_masks(mask_dir / files[0])
    assert list(masks) == list(paths) and masks["Task0"]["conv1.weight"].dtype == torch.bool
    with safe_open(str(mask_dir / files[0]), framework="pt") as handle:
        assert handle.metadata()["tall_mask_lambda"] == "0.3"
        assert handle.get_tensor("Task1/conv1.weight").dtype == torch.uint8


def test_consensus_reuses_tall_mask_files_both_ways(tmp_path: Path) -> None:
    pretrained, paths = write_checkpoints(tmp_path, 3)
    tvs = in_memory(pretrained, paths)
    # consensus computes the lambda=0.4 masks and saves them where tall_mask would
    built = Consensus(prun_thre_k=2, mask_dir=str(tmp_path / "m"), grid=[1.0]).merge(tvs)
    loaded = Consensus(prun_thre_k=2, mask_dir=str(tmp_path / "m"), load_mask=True).merge(tvs)
    assert_same(loaded.vector, built.vector)
    # tall_mask's files, with a lambda per task (e.g. the ones tall_mask chose)
    list(
        TallMask(tall_mask_lambda=[0.2, 0.6], mask_dir=str(tmp_path / "m")).candidates(
            pretrained, tvs
        )
    )
    per_task = {"Task0": 0.2, "Task1": 0.6, "Task2": 0.2}
    fresh = Consensus(tall_mask_lambda=per_task).merge(tvs)
    reused = Consensus(tall_mask_lambda=per_task, load_mask=True, mask_dir=str(tmp_path / "m"))
    assert_same(reused.merge(tvs).vector, fresh.vector)


def test_load_mask_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    pretrained, paths = write_checkpoints(tmp_path, 3)
    tvs = in_memory(pretrained, paths)
    mask_dir = str(tmp_path / "m")
    with pytest.raises(ConfigError, match="method.mask_dir"):
        list(TallMask(tall_mask_lambda=0.4, load_mask=True).candidates(pretrained, tvs))
    expected = tall_mask_path(mask_dir, list(tvs), 0.4, "sum-k100")
    with pytest.raises(MaskFileError, match=f"{expected}.*does not exist.*load_mask=false"):
        list(
            TallMask(tall_mask_lambda=0.4, load_mask=True, mask_dir=mask_dir).candidates(
                pretrained, tvs
            )
        )
    list(TallMask(tall_mask_lambda=0.4, mask_dir=mask_dir).candidates(pretrained, tvs))
    # other tasks: another file name -> missing; same names, other shapes -> shape mismatch
    two = dict(list(tvs.items())[:2])
    with pytest.raises(MaskFileError, match="2tasks.*does not exist"):
        Consensus(load_mask=True, mask_dir=mask_dir).merge(two)
    reshaped = {
        t: TaskVector(
            {"blocks.0.bias": torch.ones(3)}
            | {k: v for k, v in tv.vector.items() if k != "blocks.0.bias"}
        )
        for t, tv in tvs.items()
    }
    with pytest.raises(MaskFileError, match=r"blocks.0.bias.*\(3,\)"):
        Consensus(load_mask=True, mask_dir=mask_dir).merge(reshaped)
    # TIES-built tau_MTL is another recipe: another file
    with pytest.raises(MaskFileError, match="ties-k20-sum"):
        Consensus(load_mask=True, use_ties=True, mask_dir=mask_dir).merge(tvs)
    (Path(mask_dir) / "junk.safetensors").write_text("not a mask file")
    with pytest.raises(MaskFileError, match="junk.safetensors"):
        Consensus(masks_path=str(Path(mask_dir) / "junk.safetensors")).merge(tvs)


def test_streamed_mask_file_equals_save_masks(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(3)
    masks = {
        task: {
            "w": torch.rand(3, 5, generator=gen) > 0.5,
            "s": torch.tensor(True),
            "e": torch.zeros(0, dtype=torch.bool),
        }
        for task in ("A", "B")
    }
    save_masks(tmp_path / "a.safetensors", masks)
    entries = [
        (t, n, m.shape) for n in ("w", "s", "e") for t, mask in masks.items() for m in [mask[n]]
    ]
    with mask_writer(tmp_path / "b.safetensors", ["A", "B"], entries) as write:
        for task, name, _ in entries:
            write(task, name, masks[task][name])
    for path in ("a.safetensors", "b.safetensors"):
        assert_same(
            {t: dict(sorted(m.items())) for t, m in load_masks(tmp_path / path).items()},
            {t: dict(sorted(m.items())) for t, m in masks.items()},
        )
    with pytest.raises(ValueError, match="out of order"):
        with mask_writer(tmp_path / "c.safetensors", ["A", "B"], entries) as write:
            write("B", "w", masks["B"]["w"])
    assert not (tmp_path / "c.safetensors").exists()  # never left half-written


def test_derived_state_dict_loads_into_a_module() -> None:
    module = torch.nn.Linear(2, 2)
    base = {k: v.detach().clone() for k, v in module.state_dict().items()}
    derived = DerivedStateDict(
        base, lambda name: torch.ones_like(base[name]) if name == "bias" else None, 2.0
    )
    module.load_state_dict(derived)
    assert torch.equal(module.bias, base["bias"] + 2) and torch.equal(module.weight, base["weight"])


# --------------------------------------------------------------------------- checkpoint store
def store_of(root: Path, pretrained: dict) -> CheckpointStore:
    """The store of the checkpoints ``write_checkpoints`` wrote (model ``model``, ``standard``)."""
    return CheckpointStore(
        root, "model", "none", FinetuningMode(), pretrained, fingerprint(pretrained)
    )


def test_build_task_vectors_is_lazy_and_checks_each_checkpoint(tmp_path: Path) -> None:
    pretrained, paths = write_checkpoints(tmp_path, 2)
    store = store_of(tmp_path, pretrained)
    built = store.task_vectors(list(paths))
    assert all(tv.is_lazy for tv in built.values())
    assert_same(
        {t: dict(tv.vector) for t, tv in built.items()},
        {t: tv.vector for t, tv in in_memory(pretrained, paths).items()},
    )
    save_state_dict(
        load_file(str(paths["Task1"])), paths["Task1"], {"pretrained_fingerprint": "0" * 16}
    )
    with pytest.raises(CheckpointError, match="Task1.*other pretrained weights"):
        store.task_vectors(list(paths))
    save_state_dict({"conv1.weight": torch.zeros(1)}, paths["Task1"])
    with pytest.raises(CheckpointError, match="does not match the model"):
        store.task_vectors(list(paths))
    paths["Task1"].unlink()
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        store.task_vectors(list(paths))
