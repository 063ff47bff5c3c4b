"""Analyses of fine-tuned task vectors: the weight-disentanglement error of a task pair."""
