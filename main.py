"""Merge fine-tuned encoders, choose hyperparameters on Val, evaluate on Test.

python main.py                                          # the offline demo (tiny model, demo tasks)
python main.py model=ViT-B-32 num_tasks=8 method=sum    # the 8-task paper setting
python main.py -m method=sum,ties,TSVM                  # a Hydra multirun, one W&B run per job
python main.py --help                                   # the methods, config groups and keys
"""

from taskmerge.app.entry import run
from taskmerge.app.merge import merge_job

if __name__ == "__main__":
    run(__file__, "config", merge_job)
