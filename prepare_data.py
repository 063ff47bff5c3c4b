"""Prepare the real datasets into the layouts the loaders read, or show their status.

python prepare_data.py action=status                 # per task: ready / missing / wrong size
python prepare_data.py num_tasks=20                  # download what is missing (needs network)
python prepare_data.py DATASETS=[Cars,SUN397] paths.data=/data
"""

from taskmerge.app.entry import run
from taskmerge.app.prepare import prepare_job

if __name__ == "__main__":
    run(__file__, "prepare_data", prepare_job)
