"""Evaluation: scoring encoder weights on the tasks, and the reference accuracies (zero-shot,
fine-tuned) that merged ones are compared with."""
