"""Task addition on the reference's grid: alpha in 0.0..1.0 (21 points) chosen on Val, Test once.

python eval_task_addition.py --model=ViT-B-32 --finetuning-mode=standard  # the reference flags
python eval_task_addition.py --model=ViT-B-32 --finetuning-mode=linear-2
python main.py model=ViT-B-32 finetuning=linear-2 method=sum method.grid=[...]   # the same
"""

from taskmerge.app.entry import run
from taskmerge.app.merge import merge_job

if __name__ == "__main__":
    run(__file__, "eval_task_addition", merge_job)
