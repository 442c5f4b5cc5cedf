"""Table Storage: the only store.

Owns the storage accounts (the app's, and one per geography: Americas, EMEA, Asia Pacific) and the
mapping of Azure SDK failures to ``StorageUnavailable`` (``accounts``), single-use OAuth state
(``state``) and the sweep of expired rows (``sweep``). Imports only ``kernel``.
"""
