"""Interoperability with what users already have: the reference repos' checkpoint layouts and
pickles (read without running code), FusionBench's Hugging Face models, published TALL masks,
and fetching them from the Hub.

Nothing here unpickles code: legacy ``.pt`` files go through torch's weights-only loader with
inert stand-ins for known module classes (:mod:`taskmerge.io.safe_pickle`); TALL mask ``.npy``
payloads through an unpickler that can only rebuild numpy arrays (:mod:`.published_masks`).
"""
