"""Fine-tune the image encoder on each task and write safetensors checkpoints.

python finetune.py                                    # the demo tasks on the tiny model
python finetune.py model=ViT-B-32 num_tasks=8         # the reference protocol, 8 tasks
python finetune.py model=ViT-B-32 DATASETS=[MNIST] finetuning=attention
python finetune.py finetuning=linear world_size=2        # 2 processes (DDP), same result
torchrun --nproc_per_node=2 finetune.py ...               # or under torchrun
"""

from taskmerge.app.entry import run
from taskmerge.app.finetune import finetune_job

if __name__ == "__main__":
    run(__file__, "finetune", finetune_job)
