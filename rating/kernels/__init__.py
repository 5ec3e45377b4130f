"""Numba kernels: pure functions over NumPy arrays (no Arrow, no Beam), outputs passed in.

Every kernel is compiled with ``cache=True``: the first process that compiles a signature writes it
under ``__pycache__`` (or ``NUMBA_CACHE_DIR``) and later processes load it instead of spending
seconds compiling. Numba writes each cache file to a unique temporary name and renames it into
place, so worker processes that compile at the same time on a local filesystem cannot corrupt it;
on a network filesystem point ``NUMBA_CACHE_DIR`` at local disk. ``RatingEngine.warm_up`` triggers
compilation (or the cache load) in ``DoFn.setup``, before the first batch.
"""
