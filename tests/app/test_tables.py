"""The method and fine-tuning-mode tables of the README and the docs are the registry's and the
configs' (regenerate them with ``python -m taskmerge.app.tables``)."""

from __future__ import annotations

import pytest

from taskmerge.app.tables import DOCUMENTS, ROOT, methods_table, modes_table, render
from taskmerge.merging.registry import method_names
from tests.helpers.configs import options


@pytest.mark.parametrize("document", DOCUMENTS)
def test_generated_tables_are_current(document: str) -> None:
    text = (ROOT / document).read_text()
    assert render(text) == text, f"run `python -m taskmerge.app.tables` to update {document}"


def test_tables_list_every_method_and_mode() -> None:
    methods = methods_table()
    assert all(f"| `{name}` |" in methods for name in method_names())
    modes = modes_table()
    assert all(f"| `{name}` |" in modes for name in options("finetuning"))
