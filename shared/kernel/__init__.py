"""The kernel: what every context shares, and nothing else.

Owns the one exception tree (``errors``), the typed settings read lazily from the environment
(``settings``), keyed and random identifiers (``identifiers``), the clock (``clock``) and a small
thread-safe memo (``memo``). It imports nothing of ours; everything else may import it.
"""
