"""The reader's explicit choice of language, carried across a round trip through the EHR or Microsoft.

A reader who picked a language (``?lang=`` on our pages) and then signs in leaves for the EHR's or Microsoft's
pages and comes back on a callback whose URL we do not choose. The single-use ``state`` of that round trip is
ours, so it carries the choice (``shared.storage.state``): the web edge says what the request's reader chose
(``choosing``), a state created or sealed during the request keeps it, and consuming that state on the way back
hands it to the request that consumes it (``resume``), whose pages and links then use it.

``shared/`` never interprets the value: it is a short language tag the web edge (``connector/i18n.py``) gave
and checks again before using it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_TAG = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})?")
_OUTSIDE = ""  # no request is being handled: nothing is recorded, nothing resumed (no request may inherit it)
_chosen: ContextVar[str | None] = ContextVar("reader_language", default=_OUTSIDE)


def chosen_language() -> str | None:
    """The language the reader of the request being handled chose explicitly, or carried back; None if none."""
    return _chosen.get() or None


@contextmanager
def choosing(language: str | None) -> Iterator[None]:
    """Handle a request whose reader chose ``language`` (None: they chose none); set by the web edge."""
    token = _chosen.set(language if language is not None and _TAG.fullmatch(language) else None)
    try:
        yield
    finally:
        _chosen.reset(token)


def resume(language: object) -> None:
    """A consumed state carried ``language``: the rest of this request speaks it, unless its reader chose one.
    Outside a request (``choosing``) it does nothing, so no later work on the thread can inherit it."""
    if isinstance(language, str) and _TAG.fullmatch(language) and _chosen.get() is None:
        _chosen.set(language)
