"""Paper-style reports of merge experiments: ``results.json`` files -> tables, plots, W&B.

    runs, skipped = collect_runs(["outputs/main-multirun/2025-01-01/12-00-00"])
    report = build_report(runs, skipped)
    print(render_markdown(report))
    files = write_report(report, "report_dir")   # report.md/.csv/.tex, val_curves.png, ...
    log_wandb(report, files, group="my-sweep")   # one W&B run: the table and the plots

One table per setting (model, pretrained weights, task list); rows are method x fine-tuning
mode (x evaluation forward where it is not the mode's own) x LiNeS, columns each task's Test
top-1, the means (absolute, normalized), the chosen hyperparameters, and the published figure
of the same setting (:mod:`taskmerge.reporting.published`) with the difference. ``report.py`` at the
repository root is the command line. Modules: :mod:`.runs` (collecting, building),
:mod:`.cells` (formatting), :mod:`.render` (Markdown, CSV, LaTeX), :mod:`.output` (plots,
files, W&B).
"""

from taskmerge.reporting.cells import format_hyperparameters
from taskmerge.reporting.files import log_wandb, wandb_table_data, write_report
from taskmerge.reporting.plots import plot_modes, plot_per_task, plot_val_curves
from taskmerge.reporting.render import (
    latex_escape,
    render_csv,
    render_latex,
    render_markdown,
    row_cells,
    table_columns,
)
from taskmerge.reporting.runs import (
    Report,
    Row,
    Run,
    Skipped,
    Table,
    build_report,
    collect_runs,
    grid_edge_of,
    sweep_name,
)

__all__ = [
    "Report", "Row", "Run", "Skipped", "Table", "build_report", "collect_runs",
    "format_hyperparameters", "grid_edge_of", "latex_escape", "log_wandb", "plot_modes",
    "plot_per_task", "plot_val_curves", "render_csv", "render_latex", "render_markdown",
    "row_cells", "sweep_name", "table_columns", "wandb_table_data", "write_report",
]  # fmt: skip
