"""The offline demo tasks: deterministic, balanced, cached, versioned, reference splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from taskmerge.data import demo_data
from taskmerge.data.demo_data import demo_split_path, load_demo_split
from taskmerge.data.demo_tasks import DEMO_TASKS, IMAGE_SIZE, TEST_SIZE, TRAIN_SIZE
from taskmerge.data.splits import split_train_val
from taskmerge.data.task_lists import get_task_spec
from taskmerge.errors import ConfigError


def test_at_least_eight_tasks_with_names_and_templates() -> None:
    assert len(DEMO_TASKS) >= 8
    for task in DEMO_TASKS.values():
        assert len(task.classnames) >= 4 and len(set(task.classnames)) == len(task.classnames)
        assert all(t.format("x") != t for t in task.templates)


@pytest.mark.parametrize("name", list(DEMO_TASKS))
def test_generation_is_deterministic_and_balanced(name: str) -> None:
    task = DEMO_TASKS[name]
    images, labels = task.generate(seed=5, size=120)
    again, labels_again = task.generate(seed=5, size=120)
    assert images.shape == (120, IMAGE_SIZE, IMAGE_SIZE, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    counts = np.bincount(labels, minlength=len(task.classnames))
    assert counts.max() - counts.min() <= 1


def test_each_task_has_its_own_domain() -> None:
    """Mean colours differ between tasks (separate input domains, like the real suite)."""
    means = np.stack([t.generate(0, 64)[0].reshape(-1, 3).mean(0) for t in DEMO_TASKS.values()])
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert distances[~np.eye(len(means), dtype=bool)].min() > 10


def test_splits_are_cached_and_follow_the_val_protocol(tmp_path: Path) -> None:
    train = load_demo_split("Digits", tmp_path, "train")
    test = load_demo_split("Digits", tmp_path, "test")
    assert len(train) == TRAIN_SIZE and len(test) == TEST_SIZE
    path = demo_split_path(tmp_path, "Digits", "train")
    stamp = path.stat().st_mtime_ns
    cached = load_demo_split("Digits", tmp_path, "train")
    assert path.stat().st_mtime_ns == stamp  # read, not rebuilt
    assert np.array_equal(cached.images, train.images)
    fit, val = split_train_val(train)
    assert len(val) == TRAIN_SIZE // 10 and len(fit) == TRAIN_SIZE - TRAIN_SIZE // 10
    image, label = train[0]
    assert image.size == (IMAGE_SIZE, IMAGE_SIZE) and 0 <= label < 10


def test_generator_version_change_rebuilds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_demo_split("Shapes", tmp_path, "test")
    old = demo_split_path(tmp_path, "Shapes", "test")
    monkeypatch.setattr(demo_data, "GENERATOR_VERSION", demo_data.GENERATOR_VERSION + 1)
    new = demo_split_path(tmp_path, "Shapes", "test")
    assert new != old and not new.exists()
    load_demo_split("Shapes", tmp_path, "test")
    assert new.exists()


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown task 'Nope'.*MNIST.*Digits"):
        get_task_spec("Nope")
