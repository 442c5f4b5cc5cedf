"""Count the azure-data-tables calls made in this process (the local host runs the app in-process)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from azure.data.tables import TableClient

OPERATIONS = (
    "get_entity",
    "create_entity",
    "update_entity",
    "upsert_entity",
    "delete_entity",
    "query_entities",
    "submit_transaction",
)


class TableOperations:
    """``with TableOperations().installed() as ops: ...; ops.take()`` → ``Counter({"Visits.get_entity": n, ...})``."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[TableOperations]:
        originals = {name: getattr(TableClient, name) for name in OPERATIONS}

        def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
            def counted(client: TableClient, *args: Any, **kwargs: Any) -> Any:
                with self._lock:
                    self.counts[f"{client.table_name}.{name}"] += 1
                return original(client, *args, **kwargs)

            return counted

        for name, original in originals.items():
            setattr(TableClient, name, wrap(name, original))
        try:
            yield self
        finally:
            for name, original in originals.items():
                setattr(TableClient, name, original)

    def take(self) -> Counter[str]:
        """The counts since the last ``take``, and start again from zero."""
        with self._lock:
            counts, self.counts = self.counts, Counter()
        return counts
