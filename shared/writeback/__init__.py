"""Writeback: connect and disconnect events into the EHR, at least once and repeated only from a crash window.

Owns the port every EHR writeback adapter implements (``model``), the lookup of a configuration's
writeback target through the configuration repository (``targets``), the per-event claim/done rows
(``ledger``) and the queue worker with its retries and failure log (``worker``). Entered by the
``writeback_events`` queue trigger. Imports ``kernel``, adapters, ``configurations`` and ``visits``.
"""
