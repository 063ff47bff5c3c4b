"""``protocol=<reference>``: each choice sets what its reference does differently, value for
value (grids as numpy computes them, the trim population, the epoch order, task conventions),
and nothing else; the user's own ``method.grid`` still wins."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from taskmerge.app.schema import check_config
from tests.helpers.configs import compose, options

PROTOCOLS = ("taskmerge", "tall_masks", "lines", "tsv", "tangent", "linear2", "task_vectors")


def _method(protocol: str, method: str) -> dict:
    cfg = compose("config", [f"protocol={protocol}", f"method={method}"])
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def test_every_protocol_is_a_choice_and_passes_the_schema() -> None:
    assert set(options("protocol")) == set(PROTOCOLS)
    for protocol in PROTOCOLS:
        for entry in ("config", "finetune", "analyze"):
            resolved = OmegaConf.to_container(compose(entry, [f"protocol={protocol}"]),
                                              resolve=True)  # fmt: skip
            check_config(resolved, entry)  # type: ignore[arg-type]
            assert resolved["protocol"]["name"] == protocol  # type: ignore[index]


@pytest.mark.parametrize(
    ("protocol", "method", "grid"),
    [
        ("taskmerge", "sum", [i / 10 for i in range(1, 11)]),
        ("tall_masks", "sum", np.linspace(0.0, 1.0, 21 // 2 + 1)[1:]),  # n_eval_points 21
        ("tall_masks", "ties", np.linspace(0.0, 1.0, 11)[1:]),
        ("lines", "ties", np.arange(0.1, 1.6, 0.1)),
        ("lines", "sum", np.linspace(0.0, 1.0, 11)[1:]),
        ("tsv", "TSVM", np.linspace(0.0, 3.0, 31)[1:]),
        ("tsv", "TSVM_2", np.linspace(0.0, 3.0, 31)[1:]),
        ("tsv", "sum", np.linspace(0.0, 1.0, 31)[1:]),
        ("tsv", "consensus", np.linspace(0.0, 1.0, 31)[1:]),
        ("tangent", "sum", np.linspace(0.0, 1.0, 21)),
        ("linear2", "sum", np.linspace(0.0, 1.0, 21)),
        ("task_vectors", "sum", np.linspace(0.0, 1.0, 21)),
    ],
)
def test_grids_are_the_references_value_for_value(protocol: str, method: str, grid) -> None:  # noqa: ANN001
    assert _method(protocol, method)["method"]["grid"] == [float(v) for v in grid]


def test_each_protocol_sets_its_trim_population_epoch_order_and_conventions() -> None:
    expected = {
        "taskmerge": ("image", "reshuffle", "tall_masks"),
        "tall_masks": ("checkpoint", "fixed", "tall_masks"),
        "lines": ("checkpoint", "fixed", "tall_masks"),
        "tsv": ("checkpoint", "fixed", "tsv"),
        "tangent": ("image", "fixed", "tall_masks"),
        "linear2": ("image", "fixed", "tall_masks"),
        "task_vectors": ("image", "reshuffle", "tall_masks"),
    }
    for protocol, (population, order, convention) in expected.items():
        resolved = _method(protocol, "ties")
        assert resolved["method"]["trim_population"] == population, protocol
        assert resolved["train"]["epoch_order"] == order, protocol
        assert resolved["tasks"]["convention"] == convention, protocol
        assert _method(protocol, "mag_masking")["method"]["trim_population"] == population


def test_the_users_grid_wins_over_the_protocols() -> None:
    cfg = compose("config", ["protocol=tsv", "method=TSVM", "method.grid=[0.5,1.5]"])
    assert OmegaConf.to_container(cfg, resolve=True)["method"]["grid"] == [0.5, 1.5]  # type: ignore[index]


def test_help_lists_the_protocols() -> None:
    import subprocess
    import sys

    from tests.helpers.configs import ROOT

    out = subprocess.run([sys.executable, str(ROOT / "main.py"), "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=300).stdout  # fmt: skip
    assert "protocol: " in out and "tsv" in out and "tall_masks" in out
