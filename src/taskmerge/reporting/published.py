"""Published Test accuracies of the merge methods, for the settings the papers report.

Settings: open_clip ViT-B-32 / ViT-L-14 with OpenAI's weights, standard (non-linear)
fine-tuning, the first 8, 14 or 20 tasks of the standard list (``STANDARD_TASKS``), the
reference repos' checkpoints. Figures are mean Test top-1 in %, absolute and normalized
(merged / fine-tuned per task, averaged); ``None`` where a source gives no normalized value.

Sources:

* ``TSV``: the Task Singular Vectors repository (Gargiulo et al., "Task Singular Vectors:
  Reducing Task Interference in Model Merging", CVPR 2025, arXiv:2412.00081),
  ``AntoAndGar/task_singular_vectors`` at commit a6c97188:
  ``notebooks/animation_data/radar_results_<model>.json`` holds each method's per-task Test
  top-1 for 8 / 14 / 20 tasks; the figures here are their means, normalized by
  ``results/single_task/<model>/nonlinear_ft_accuracies.json`` (the fine-tuned row is that
  file's mean). They round to the paper's Table 1 values.
* ``ISO``: Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common and
  Task-Specific Subspaces", ICML 2025, arXiv:2502.04959 (on the TSV / TALL-mask checkpoints).
* ``FB``: FusionBench (Tang et al., arXiv:2406.03280) on its own CLIP ViT-B/32 checkpoints
  (``tanganke/clip-vit-base-patch32_<task>``, 8 tasks): PCB-merging 76.3, MagMax 71.1, the
  figures quoted in issue 20; no normalized value, and none published for 14 / 20 tasks (a
  ``None`` entry: no figure is shown there).
* ``CART``: Choi et al., "Revisiting Weight Averaging for Model Merging", arXiv:2412.12153,
  the table of the authors' ``JH-GEECS/CART`` README (TALL-mask checkpoints; no normalized
  figures).
* ``WUDI``: Cheng et al., arXiv:2503.08099 (ICML 2025), ViT-B/32 8 tasks on the
  ``mlfoundations/task_vectors`` checkpoints (other checkpoints than the table's others).
* ``EMR``: Huang et al., arXiv:2405.17461 (NeurIPS 2024) as reported by FusionBench for its own
  CLIP checkpoints, ViT-B/32 8 tasks (other checkpoints than the table's others).

A count a source does not report is ``None`` in its row: no figure for that setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from taskmerge.data.spec import STANDARD_TASKS

#: Models and task counts with published figures.
MODELS = ("ViT-B-32", "ViT-L-14")
TASK_COUNTS = (8, 14, 20)

_TSV_REPO = "AntoAndGar/task_singular_vectors@a6c97188"
SOURCES = {
    "TSV": (
        "Gargiulo et al., Task Singular Vectors, CVPR 2025 (arXiv:2412.00081): means of "
        f"{_TSV_REPO} notebooks/animation_data/radar_results_{{model}}.json, normalized by "
        "results/single_task/{model}/nonlinear_ft_accuracies.json (= paper Table 1). "
        "Artifacts: TSV's older release checkpoints; that file's fine-tuned DTD test accuracy "
        "(0.980 = 921/940) comes from a DTD folder whose test images are also in train, which "
        "inflates DTD and every normalized mean"
    ),
    "ISO": (
        "Marczak et al., No Task Left Behind: Isotropic Model Merging with Common and "
        "Task-Specific Subspaces, ICML 2025 (arXiv:2502.04959), TSV/TALL-mask checkpoints. "
        "Artifact: the tall_masks/TSV release's DTD folder (test images also in train)"
    ),
    "FB": (
        "FusionBench (Tang et al., arXiv:2406.03280), CLIP ViT-B/32 8 tasks on FusionBench's "
        "checkpoints (tanganke/clip-vit-base-patch32_<task>)"
    ),
    "CART": (
        "Choi et al., Revisiting Weight Averaging for Model Merging (arXiv:2412.12153), "
        "JH-GEECS/CART README table, TALL-mask checkpoints"
    ),
    "WUDI": (
        "Cheng et al., WUDI-merging, ICML 2025 (arXiv:2503.08099), "
        "mlfoundations/task_vectors checkpoints (not the TALL-mask ones)"
    ),
    "EMR": (
        "Huang et al., EMR-Merging, NeurIPS 2024 (arXiv:2405.17461), as reported by "
        "FusionBench on its CLIP checkpoints (not the TALL-mask ones)"
    ),
}

#: Our method name -> the papers' name for it. ``TSVM_2`` (eigendecomposition) computes the
#: same merge as ``TSVM`` (the TSV repository ships both as TSV-Merge).
PAPER_NAMES = {
    "zeroshot": "Zero-shot",
    "average": "Weight averaging",
    "sum": "Task arithmetic",
    "consensus": "Consensus TA",
    "TSVM": "TSV-M",
    "TSVM_2": "TSV-M",
    "TSVC": "TSV-C",
    "iso_c": "Iso-C",
    "iso_cts": "Iso-CTS",
    "finetuned": "Fine-tuned",
    "pcb": "PCB-merging",
    "magmax": "MagMax",
    "cart": "CART",
    "wudi": "WUDI-merging",
    "emr": "EMR-merging",
}

# (paper name, model) -> source key, ((abs, normalized) for 8, 14, 20 tasks; None: not published)
_FIGURES: dict[tuple[str, str], tuple[str, tuple[tuple[float, float | None] | None, ...]]] = {
    ("Zero-shot", "ViT-B-32"): ("TSV", ((48.3, 53.6), (57.2, 63.7), (56.1, 62.4))),
    ("Zero-shot", "ViT-L-14"): ("TSV", ((64.7, 68.0), (68.2, 72.2), (65.2, 69.0))),
    ("Weight averaging", "ViT-B-32"): ("TSV", ((66.3, 72.1), (64.3, 71.1), (61.0, 67.5))),
    ("Weight averaging", "ViT-L-14"): ("TSV", ((79.6, 83.1), (76.7, 81.1), (71.6, 75.6))),
    ("Task arithmetic", "ViT-B-32"): ("TSV", ((70.8, 76.5), (65.3, 72.1), (60.5, 66.8))),
    ("Task arithmetic", "ViT-L-14"): ("TSV", ((84.9, 88.6), (79.4, 84.0), (74.0, 78.1))),
    ("Consensus TA", "ViT-B-32"): ("TSV", ((75.0, 80.8), (70.4, 77.4), (65.4, 72.0))),
    ("Consensus TA", "ViT-L-14"): ("TSV", ((86.3, 90.1), (82.3, 86.9), (79.0, 83.2))),
    ("TSV-M", "ViT-B-32"): ("TSV", ((85.9, 92.3), (80.1, 87.9), (77.1, 84.3))),
    ("TSV-M", "ViT-L-14"): ("TSV", ((93.0, 97.0), (89.2, 94.4), (87.7, 92.5))),
    ("TSV-C", "ViT-B-32"): ("TSV", ((92.6, 99.7), (90.3, 99.3), (90.6, 99.1))),
    ("TSV-C", "ViT-L-14"): ("TSV", ((95.7, 99.8), (94.0, 99.7), (94.4, 99.7))),
    ("Fine-tuned", "ViT-B-32"): ("TSV", ((92.8, None), (90.9, None), (91.4, None))),
    ("Fine-tuned", "ViT-L-14"): ("TSV", ((95.8, None), (94.3, None), (94.7, None))),
    ("Iso-C", "ViT-B-32"): ("ISO", ((86.3, 92.9), (80.3, 88.1), (75.5, 82.5))),
    ("Iso-C", "ViT-L-14"): ("ISO", ((94.2, None), (89.3, None), (87.6, None))),
    ("Iso-CTS", "ViT-B-32"): ("ISO", ((86.2, 92.8), (81.7, 89.7), (78.1, 85.5))),
    ("Iso-CTS", "ViT-L-14"): ("ISO", ((94.7, 98.8), (91.0, 96.3), (90.1, 94.9))),
    ("PCB-merging", "ViT-B-32"): ("FB", ((76.3, None), None, None)),
    ("MagMax", "ViT-B-32"): ("FB", ((71.1, None), None, None)),
    ("CART", "ViT-B-32"): ("CART", ((84.7, None), (79.5, None), (76.3, None))),
    ("CART", "ViT-L-14"): ("CART", ((92.6, None), (88.7, None), (87.9, None))),
    ("WUDI-merging", "ViT-B-32"): ("WUDI", ((85.2, None), None, None)),
    ("EMR-merging", "ViT-B-32"): ("EMR", ((88.7, None), None, None)),
}


@dataclass(frozen=True)
class Figure:
    """One published figure: mean Test top-1 (%), absolute and normalized, and its source."""

    method: str
    model: str
    num_tasks: int
    absolute: float
    normalized: float | None
    source: str


def standard_task_count(tasks: Sequence[str]) -> int | None:
    """N when ``tasks`` are the first N standard tasks in order and N is 8, 14 or 20."""
    n = len(tasks)
    return n if n in TASK_COUNTS and tuple(tasks) == STANDARD_TASKS[:n] else None


def lookup(
    method: str,
    model: str,
    tasks: Sequence[str],
    finetuning: str = "standard",
    eval_forward: str | None = None,
    lines: bool = False,
    pretrained: str | None = "openai",
) -> Figure | None:
    """The published figure for one of our runs, or None when no paper reports that setting.

    Args:
        method: Our method name (``sum``, ``TSVM``, ... or ``finetuned``); LiNeS runs
            (``lines=True``, or a ``+lines`` suffix) have no figure here.
        model: The open_clip model name (``ViT-B-32``, ``ViT-L-14``).
        tasks: The run's tasks, in order (must be the first 8, 14 or 20 standard tasks).
        finetuning: Only ``standard`` fine-tuning is published.
        eval_forward: Only the non-linear forward (None: the mode's own).
        pretrained: Only OpenAI's weights (``openai``; None: unknown, accepted).
    """
    if lines or method.endswith("+lines"):
        return None
    if finetuning != "standard" or eval_forward not in (None, "nonlinear"):
        return None
    if pretrained is not None and pretrained != "openai":
        return None
    paper = PAPER_NAMES.get(method)
    n = standard_task_count(tasks)
    entry = _FIGURES.get((paper, model)) if paper else None
    if entry is None or n is None:
        return None
    key, values = entry
    figure = values[TASK_COUNTS.index(n)]
    if figure is None:  # the source does not report this task count
        return None
    absolute, normalized = figure
    return Figure(paper, model, n, absolute, normalized, SOURCES[key].format(model=model))


def table() -> list[Figure]:
    """Every published figure (for listing them)."""
    return [
        Figure(paper, model, n, *figure, SOURCES[key].format(model=model))
        for (paper, model), (key, values) in _FIGURES.items()
        for n, figure in zip(TASK_COUNTS, values, strict=True)
        if figure is not None
    ]
