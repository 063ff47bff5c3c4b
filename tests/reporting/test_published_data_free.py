"""The published figures of CART, WUDI-merging and EMR-merging (issue 20), with their sources;
a task count a source does not report has no figure."""

from __future__ import annotations

from taskmerge.data.spec import STANDARD_TASKS
from taskmerge.reporting.published import lookup, table


def test_data_free_figures_and_their_sources() -> None:
    cart = [lookup("cart", "ViT-B-32", STANDARD_TASKS[:n]) for n in (8, 14, 20)]
    assert [f.absolute for f in cart] == [84.7, 79.5, 76.3]  # type: ignore[union-attr]
    assert all(f.normalized is None and "JH-GEECS/CART" in f.source for f in cart)  # type: ignore[union-attr]
    wudi = lookup("wudi", "ViT-B-32", STANDARD_TASKS[:8])
    assert wudi is not None and wudi.absolute == 85.2 and "task_vectors" in wudi.source
    emr = lookup("emr", "ViT-B-32", STANDARD_TASKS[:8])
    assert emr is not None and emr.absolute == 88.7 and "FusionBench" in emr.source
    # not published: other task counts, other models, the method without a figure
    assert lookup("wudi", "ViT-B-32", STANDARD_TASKS[:14]) is None
    assert lookup("emr", "ViT-L-14", STANDARD_TASKS[:8]) is None
    assert lookup("model_stock", "ViT-B-32", STANDARD_TASKS[:8]) is None
    listed = {(f.method, f.num_tasks) for f in table()}
    assert ("WUDI-merging", 8) in listed and ("WUDI-merging", 14) not in listed
