"""Paper-style reports of finished merge runs: tables, plots, W&B (``python report.py --help``).

python report.py outputs/main-multirun/2025-01-01/12-00-00       # one multirun
python report.py outputs/main-multirun --wandb                  # also one W&B run per sweep
"""

import sys

from taskmerge.app.report import main

if __name__ == "__main__":
    sys.exit(main())
