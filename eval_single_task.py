"""Score each task's fine-tuned encoder (or the pretrained one) on its own Val and Test split.

python eval_single_task.py --model=ViT-B-32 --finetuning-mode=none       # the reference flags
python eval_single_task.py --model=ViT-B-32 --finetuning-mode=standard
python eval_single_task.py model=ViT-B-32 evaluate=zeroshot               # the Hydra form
"""

from taskmerge.app.entry import run
from taskmerge.app.eval_single_task import eval_single_task_job

if __name__ == "__main__":
    run(__file__, "eval_single_task", eval_single_task_job)
