"""Persistence: where everything lives (:mod:`.layout`), the fine-tuned checkpoints of a model
and mode (:mod:`.checkpoints`), finished results (:mod:`.results`) and fine-tuning locks
(:mod:`.locks`)."""
