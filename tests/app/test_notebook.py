"""The example notebook runs end to end: executed with nbclient in a fresh TASKMERGE_HOME.

The kernel is this interpreter (the venv's python), registered as a kernelspec in a temporary
Jupyter data directory: nothing is installed for the user, and a clean venv with the ``test``
extra (ipykernel, nbclient, nbformat) is enough.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "taskmerge_demo.ipynb"
KERNEL = "taskmerge-test"


def register_kernel(jupyter_dir: Path) -> Path:
    """A kernelspec that runs ``sys.executable``'s ipykernel, under ``jupyter_dir/kernels``."""
    spec_dir = jupyter_dir / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "taskmerge (tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return jupyter_dir


def test_notebook_is_clean() -> None:
    """Committed without outputs, valid, and with the summary cell the test below reads."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert sum("summary" in cell.metadata.get("tags", []) for cell in code) == 1


@pytest.mark.slow
def test_notebook_runs(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(register_kernel(tmp_path / "jupyter")))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=1200,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()

    (cell,) = [c for c in nb.cells if "summary" in c.metadata.get("tags", [])]
    text = "".join(
        out.get("text", "")
        for out in cell.outputs
        if out.output_type == "stream" and out.name == "stdout"
    )
    summary = json.loads(text)
    tasks = summary["tasks"]
    assert tasks == ["Colors", "Position", "Sizes"]

    def mean(values: dict[str, float]) -> float:
        return sum(values[t] for t in tasks) / len(tasks)

    zeroshot, finetuned = mean(summary["zeroshot_test"]), mean(summary["finetuned_test"])
    assert finetuned > zeroshot + 0.1  # the quick fine-tuning learned the tasks
    for method in ("sum", "ties"):
        merged = summary["merged"][method]
        assert merged["scaling_coef"] in (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
        assert zeroshot < merged["avg_top1"] <= 1.0
    negation = summary["negation"]
    assert negation[-1]["target"] < negation[0]["target"]  # the negated task is forgotten
    assert [point["alpha"] for point in summary["lines"]] == [1.0, 0.75, 0.5, 0.25, 0.0]
    images = [
        out
        for c in nb.cells
        if c.cell_type == "code"
        for out in c.outputs
        if "image/png" in out.get("data", {})
    ]
    assert len(images) == 2  # the merging curves, the LiNeS / negation curves
    assert str(home.resolve()) in "".join(  # the notebook used the test's TASKMERGE_HOME
        out.get("text", "") for out in nb.cells[1].outputs if out.output_type == "stream"
    )
