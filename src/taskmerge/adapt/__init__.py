"""The data side of the merge methods that learn from data (:mod:`taskmerge.merging.data_methods`):
forwards and backwards of the encoder at given weights on unlabeled batches, Gram matrices of
linear layers' inputs, diagonal Fishers, and their cache beside the checkpoints."""
