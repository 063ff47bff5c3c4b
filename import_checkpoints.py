"""Import published fine-tuned checkpoints into taskmerge's layout (never executing a pickle).

python import_checkpoints.py source=hf://nik-dim/tall_masks model=ViT-B-32
python import_checkpoints.py source=hf://tanganke model=ViT-B-32 num_tasks=8     # FusionBench
python import_checkpoints.py source=~/tall_masks_checkpoints model=ViT-L-14
python import_checkpoints.py source=mnist.safetensors task=MNIST model=ViT-B-32
"""

from taskmerge.app.entry import run
from taskmerge.app.import_checkpoints import import_job

if __name__ == "__main__":
    run(__file__, "import", import_job)
