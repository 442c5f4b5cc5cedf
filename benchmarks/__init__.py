"""Figures, not timed tests: ``python -m benchmarks.launch`` and ``python -m benchmarks.writeback`` print them.

``writeback_load`` is the load harness (local Functions host, Azurite, a faulty sandbox EHR) that the writeback
benchmark and ``tests/reliability/`` share; it lives here, not in ``sandbox/``, because it drives product code and the
sandbox holds only stand-ins for the systems the connector talks to. ``table_operations`` counts the Table calls
both benchmarks report.
"""
