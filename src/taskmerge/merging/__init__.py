"""Merge methods: pure functions over task vectors plus thin classes whose arguments are the
keys of ``config/method/<name>.yaml``.

Each method class declares itself where it is defined with
:func:`~taskmerge.merging.registry.register_method`; every module of this package is discovered
by the registry, and every method is built by :func:`taskmerge.merging.build.build_method`
(Hydra, the Python API and ``taskmerge-merge`` alike). Nothing is listed here.
"""
