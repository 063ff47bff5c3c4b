"""Fine-tuning: the modes (which parameters train, through which forward), the loop, its
resumable state, multi-process training, and one task fine-tuned into a checkpoint."""
