"""Files: atomic writes (the one storage-error path), safetensors state dicts and their checks,
digests, packed boolean masks, and the safe reader of legacy pickles."""
