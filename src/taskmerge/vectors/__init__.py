"""Task vectors: values with operators (in memory), or read one tensor at a time from a
checkpoint (lazy)."""
