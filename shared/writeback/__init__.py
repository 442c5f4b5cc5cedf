"""Writeback: connect and disconnect events into the EHR, exactly once.

Owns the port every EHR writeback adapter implements (``model``), the lookup of a configuration's
writeback target through the configuration repository (``targets``) and the queue worker with its
claims, retries and failure log (``worker``). Entered by the ``writeback_events`` queue trigger. Imports
``kernel``, adapters, ``configurations`` and ``visits``.
"""
