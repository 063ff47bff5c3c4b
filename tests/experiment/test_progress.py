"""Long work says how far it is: the sweep's bar has the grid's size as its total (grid point
j/M), Test and the analysis cells theirs, fine-tuning says task i/N; the first log line of a
run says what it will do before it does it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from taskmerge.analysis import disentanglement
from taskmerge.analysis.disentanglement import disentanglement_error, evaluation_count
from taskmerge.app.analyze import plan_line as analysis_plan
from taskmerge.app.merge import plan_line
from taskmerge.app.workspace import Workspace
from taskmerge.experiment import sweep as sweep_module
from taskmerge.experiment.run import make_references, run_merge
from taskmerge.merging.build import build_method
from taskmerge.vectors.task_vector import TaskVector

BARS: list[tqdm] = []


class Recorded(tqdm):
    """A tqdm that keeps every bar it opens (to read its total and count)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        kwargs["disable"] = False
        kwargs["file"] = open("/dev/null", "w")  # noqa: SIM115 - closed with the bar's file
        super().__init__(*args, **kwargs)
        BARS.append(self)


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> list[tqdm]:
    BARS.clear()
    monkeypatch.setattr(sweep_module, "tqdm", Recorded)
    monkeypatch.setattr(disentanglement, "tqdm", Recorded)
    return BARS


class CountingEvaluator:
    """Accuracy = 0.5 + the mean of the first weight (any number), counting calls."""

    def __init__(self, tasks: list[str]) -> None:
        self.task_names = tasks
        self.calls: list[tuple[str, str]] = []

    def accuracy(self, state, task: str, split: str) -> float:  # noqa: ANN001
        self.calls.append((task, split))
        return float(0.5 + 0.1 * torch.tanh(state["w"].mean()))

    def predictions(self, state, task: str, split: str):  # noqa: ANN001, ANN201
        self.calls.append((task, split))
        return ((state["w"][:4] > 0).long(),)


def _vectors() -> tuple[dict, dict]:
    pretrained = {"w": torch.zeros(8)}
    vectors = {t: TaskVector({"w": torch.randn(8, generator=torch.Generator().manual_seed(i))})
               for i, t in enumerate(["A", "B"])}  # fmt: skip
    return pretrained, vectors


def test_sweep_bar_total_is_the_grid(bars: list[tqdm]) -> None:
    pretrained, vectors = _vectors()
    method = build_method("sum", {"grid": [0.1, 0.2, 0.3, 0.4]})
    assert method.grid_size() == 4
    evaluator = CountingEvaluator(["A", "B"])
    finetuned = {t: {"val_top1": 0.9, "test_top1": 0.9} for t in ["A", "B"]}
    run_merge(method, pretrained, vectors, evaluator, make_references(["A", "B"], finetuned, None))
    val = [b for b in bars if "Val, grid point" in b.desc]
    assert [(b.total, b.n) for b in val] == [(4, 4)]
    test = [b for b in bars if "Test, task" in b.desc]
    assert [(b.total, b.n) for b in test] == [(2, 2)]
    assert evaluator.calls.count(("A", "val")) == 4 and evaluator.calls.count(("A", "test")) == 1


@pytest.mark.parametrize(
    ("name", "options", "size"),
    [
        ("sum", {}, None),
        ("ties", {"grid": [0.5, 1.0]}, 2),
        ("zeroshot", {}, 1),
        ("sum", {"scaling_coef": 0.3}, 1),
        ("tall_mask", {"tall_mask_lambda": [0.2, 0.4, 0.6]}, 3),
        ("mag_masking", {}, 1),
        ("TSVC", {}, 1),
    ],
)
def test_grid_size_is_the_number_of_candidates(name: str, options: dict, size: int | None) -> None:
    pretrained = {"w": torch.zeros(4, 4), "b": torch.zeros(4)}
    vectors = {
        t: TaskVector({k: torch.randn(v.shape, generator=torch.Generator().manual_seed(i))
                       for k, v in pretrained.items()})
        for i, t in enumerate(["A", "B"])
    }  # fmt: skip
    method = build_method(name, options)
    candidates = list(method.candidates(pretrained, vectors))
    assert method.grid_size() == len(candidates)
    if size is not None:
        assert len(candidates) == size


@pytest.mark.parametrize("points", [2, 3])
def test_disentanglement_bar_counts_cells(bars: list[tqdm], points: int) -> None:
    pretrained, vectors = _vectors()
    evaluator = CountingEvaluator(["A", "B"])
    grid = [float(g) for g in torch.linspace(-1, 1, points)]
    disentanglement_error(evaluator, pretrained, [vectors["A"].vector, vectors["B"].vector],
                          ["A", "B"], grid)  # fmt: skip
    assert len(evaluator.calls) == evaluation_count(points) == 2 * (points**2 + points)
    assert [(b.total, b.n) for b in bars] == [(evaluation_count(points),) * 2]


def _cfg(**extra) -> object:  # noqa: ANN003
    return OmegaConf.create({
        "model": {"_target_": "taskmerge.models.tiny.load_tiny_clip"},
        "tasks": {"list": "demo", "names": ["Digits", "Colors"]},
        "num_tasks": 8,
        "paths": {"checkpoints": "/ckpt"},
        "finetune_missing": True,
        "analysis": {"split": "test"},
        **extra,
    })  # fmt: skip


def test_first_log_line_of_a_merge() -> None:
    method = build_method("ties", {"grid": [0.2, 0.4, 0.6]})
    line = plan_line(_cfg(), method, Path("/runs/x"))
    assert line.startswith("main.py: merge with ties;")
    expected = [
        "2 tasks (Digits, Colors)",
        "a Val sweep of 3 grid points, then Test once",
        "missing checkpoints are fine-tuned first into /ckpt",
        "results in /runs/x",
    ]
    for words in expected:
        assert words in line, (words, line)
    line = plan_line(_cfg(finetune_missing=False), build_method("zeroshot", {}), Path("/r"))
    assert "no sweep" in line and "checkpoints from /ckpt" in line


def test_first_log_line_of_an_analysis() -> None:
    line = analysis_plan(_cfg(), ["Digits", "Colors"], [-2.0, 0.0, 2.0], 1, Path("/r"))
    assert "Digits/Colors on a 3 x 3 grid over [-2, 2] (test split)" in line


def test_finetuning_announces_count_tasks_and_destination() -> None:
    fake = SimpleNamespace(
        data=SimpleNamespace(
            specs={"Digits": SimpleNamespace(epochs=3), "Colors": SimpleNamespace(epochs=3)}
        ),  # fmt: skip
        mode=SimpleNamespace(name="standard"),
        evaluator=SimpleNamespace(device="cpu"),
        store=SimpleNamespace(layout=SimpleNamespace(mode_dir=Path("/ckpt/tiny/standard"))),
    )
    line = Workspace.announce_finetuning(fake, ["Digits", "Colors"])  # type: ignore[arg-type]
    assert line == ("fine-tuning 2 missing checkpoints (Digits, Colors), 3 epochs each, mode "
                    "standard on cpu, into /ckpt/tiny/standard")  # fmt: skip


def test_finetuning_bar_says_task_i_of_n(monkeypatch: pytest.MonkeyPatch) -> None:
    from taskmerge.finetune import task as task_module

    seen = {}

    def fake_finetune(*args, description: str, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen["description"] = description
        raise SystemExit  # stop before training

    monkeypatch.setattr(task_module, "finetune", fake_finetune)
    store = SimpleNamespace(
        path=lambda t: Path("/nonexistent/x"),
        layout=SimpleNamespace(training_state=lambda t: None),
        fingerprint="f",
    )  # fmt: skip
    data = SimpleNamespace(train_set=lambda t, transform="reference": [],
                           specs={"Digits": SimpleNamespace(epochs=1)})  # fmt: skip
    heads = SimpleNamespace(head=lambda t: None)
    mode = SimpleNamespace(fingerprint=lambda: "m")
    settings = SimpleNamespace(transform="reference")
    monkeypatch.setattr(task_module, "asdict", lambda s: {})
    with pytest.raises(SystemExit):
        task_module.finetune_task("Digits", torch.nn.Linear(1, 1), data, heads, store, settings,
                                  mode, "cpu", position=(2, 8))  # type: ignore[arg-type]  # fmt: skip
    assert seen["description"] == "fine-tuning Digits (task 2/8)"


def test_analysis_cost_is_said_before_it_starts() -> None:
    from taskmerge.app.analyze import cost_line

    splits = SimpleNamespace(test=list(range(1000)), val=list(range(300)))
    workspace = SimpleNamespace(
        tasks=["Digits", "Colors"],
        data=SimpleNamespace(splits=lambda task: splits),
        mode=SimpleNamespace(name="standard"),
        evaluator=SimpleNamespace(forward="nonlinear"),
    )
    line = cost_line(workspace, 5, "test")  # type: ignore[arg-type]
    assert line == (
        "standard (nonlinear forward): 60 evaluations of a test split, 2000 test images in all; "
        "the reference grid (analysis.grid_points=15) costs 8x this"
    )
    workspace.evaluator = SimpleNamespace(forward="linear", supports_affine=True)
    assert "one primal pass and two JVPs per image" in cost_line(workspace, 15, "val")  # type: ignore[arg-type]
