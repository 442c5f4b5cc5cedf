"""Marking user-facing text in Python for translation, without translating it here.

``N_("Tenant %(tenant)s is not allowed.", tenant=tenant)`` returns a ``Text``: a ``str`` holding the
English sentence (so logs, JSON problems and comparisons see plain English) that also remembers its
catalogue id and parameters. The web edge (``connector/i18n.py``) translates every ``Text`` it is
asked to render into the reader's language; nothing in ``shared/`` knows which language that is.

``tools/i18n.py extract`` collects every ``N_`` call's first argument into the catalogues, so the
msgid must be a string literal. Parameters use ``%(name)s``, as in the templates' ``_()`` calls.
"""

from __future__ import annotations

from collections.abc import Mapping


class Text(str):
    """English text (its ``str`` value) with the catalogue id and parameters it was made from."""

    msgid: str
    params: Mapping[str, object]

    def __new__(cls, msgid: str, params: Mapping[str, object] | None = None) -> Text:
        values = dict(params or {})
        text = super().__new__(cls, msgid % values if values else msgid)
        text.msgid = msgid
        text.params = values
        return text

    def __reduce__(self) -> tuple[object, ...]:
        return (Text, (self.msgid, dict(self.params)))


def N_(msgid: str, **params: object) -> Text:  # noqa: N802 - the gettext convention extractors look for
    """Mark ``msgid`` for translation at render time; ``params`` fill its ``%(name)s`` placeholders."""
    return Text(msgid, params)
