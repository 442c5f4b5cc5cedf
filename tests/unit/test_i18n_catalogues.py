"""Every user-facing string is in the catalogue, and every catalogue translates all of them.

Three nets: (1) the templates' source holds no text outside ``_()`` / ``{% trans %}``; (2) every page state
(``tests/support/page_states.py``), rendered with a pseudo-translation that brackets each catalogue string,
shows no text node or label that is neither bracketed nor the reader's own data, which also catches Python
strings that reach a page without an ``N_`` mark; (3) the four catalogues are complete, current (nothing
missing or stale against the sources), with no fuzzy entry and placeholders that match (``tools.i18n check``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.support import Translations

from connector import i18n, web
from connector.web import TEMPLATES_DIR
from tests.support.page_states import DATA, PAGE_STATES, formatted_dates
from tools.i18n import problems, template, translated_languages

OPEN, CLOSE = "⟦", "⟧"
_JINJA = re.compile(r"\{#.*?#\}|\{%-?\s*trans\b.*?\{%-?\s*endtrans\s*-?%\}|\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_HIDDEN = re.compile(r"<(script|style)\b.*?</\1>", re.DOTALL)
_WORD = re.compile(r"[^\W\d_]{2,}")
_NOT_PROSE = re.compile(r"\S*(?:://|@|/|_|\d|\.\w)\S*")  # URLs, e-mail addresses, paths, ids, codes
LABELS = ("aria-label", "alt", "title", "placeholder")
MESSAGE_DATA = re.compile(r"^data-(label|label-.*|updated|reconnecting|no-devices|ready|unavailable|copied|failed)$")
SOURCE_ALLOWED = {"Teams EHR Connector"}
_ATTRIBUTES = re.compile(r'[\w-]+="[^"]*"')  # a macro that writes attributes (portal/_fields.html)


class _Text(HTMLParser):
    """Text nodes and labels a person reads or hears, outside scripts, styles and code."""

    SKIP = {"script", "style", "code", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.depth += 1
        for name, value in attrs:
            if value and (name in LABELS or MESSAGE_DATA.match(name)):
                self.found.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth == 0 and data.strip():
            self.found.append(data.strip())


def readable_text(html: str) -> list[str]:
    parser = _Text()
    parser.feed(html)
    return parser.found


def without_translated(text: str) -> str:
    """``text`` less every ⟦translated⟧ span, innermost first (a translated message may hold another)."""
    innermost = re.compile(f"{OPEN}[^{OPEN}{CLOSE}]*{CLOSE}")
    while (shorter := innermost.sub(" ", text)) != text:
        text = shorter
    return text


def prose(text: str, data: frozenset[str]) -> list[str]:
    """The words of ``text`` that are neither bracketed (translated), the reader's data, nor codes and URLs."""
    text = without_translated(text)
    for value in sorted(data, key=len, reverse=True):
        text = text.replace(value, " ")
    return _WORD.findall(_NOT_PROSE.sub(" ", text))


def templates() -> Iterator[Path]:
    yield from sorted(TEMPLATES_DIR.rglob("*.html"))


@pytest.mark.parametrize("path", list(templates()), ids=lambda p: str(p.relative_to(TEMPLATES_DIR)))
def test_template_source_has_no_text_outside_the_catalogue(path: Path) -> None:
    source = _HIDDEN.sub(" ", _JINJA.sub(" ", path.read_text(encoding="utf-8")))
    texts = [_ATTRIBUTES.sub(" ", text) for text in readable_text(source) if text not in SOURCE_ALLOWED]
    words = [word for text in texts for word in prose(text, DATA)]
    assert not words, f"{path.name}: text outside _() or {{% trans %}}: {words}"


def test_every_template_has_a_page_state(monkeypatch: pytest.MonkeyPatch) -> None:
    env = web.templates()
    rendered: set[str] = set()
    load = env.get_template

    def recording(name: str, *args: Any, **kwargs: Any) -> Any:
        rendered.add(name)
        return load(name, *args, **kwargs)

    monkeypatch.setattr(env, "get_template", recording)
    for state in PAGE_STATES.values():
        state()
    pages = {p.relative_to(TEMPLATES_DIR).as_posix() for p in templates()}
    assert pages <= rendered, f"no page state renders {sorted(pages - rendered)}"


@pytest.fixture
def pseudo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every catalogue string rendered as ⟦its English⟧ (placeholders and markup kept)."""
    catalog = Catalog(locale="en", domain=i18n.DOMAIN)
    for message in template():
        if isinstance(message.id, tuple):
            catalog.add(message.id, tuple(f"{OPEN}{form}{CLOSE}" for form in message.id), context=message.context)
        elif message.id:
            catalog.add(message.id, f"{OPEN}{message.id}{CLOSE}", context=message.context)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    translations = Translations(compiled, domain=i18n.DOMAIN)
    monkeypatch.setattr(i18n, "translations", lambda code: translations)


@pytest.mark.parametrize("name", list(PAGE_STATES))
def test_rendered_page_has_no_untranslated_text(name: str, pseudo: None) -> None:
    with i18n.speaking(i18n.language_for("GET", "https://connector.example.org/api/page", "en")):
        body = PAGE_STATES[name]().get_body().decode()
        dates = formatted_dates()
    body = without_translated(body)
    untranslated = {text: words for text in readable_text(body) if (words := prose(text, DATA | dates))}
    assert not untranslated, f"{name}: text that is not in the catalogue: {untranslated}"


@pytest.mark.parametrize("language", translated_languages())
def test_catalogue_is_complete_current_and_well_formed(language: str) -> None:
    found = [str(problem) for problem in problems(language)]
    assert not found, "run `python -m tools.i18n extract`, translate, then `check`:\n" + "\n".join(found)


def test_the_check_reports_missing_fuzzy_and_broken_entries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The catalogue test above would fail: ``problems`` sees each kind of defect (not a vacuous pass)."""
    source = Catalog(locale="en")
    for msgid in ("Kept", "Untranslated", "Fuzzy", "Broken %(name)s", "Missing"):
        source.add(msgid)
    po = tmp_path / "it" / "LC_MESSAGES" / "messages.po"
    po.parent.mkdir(parents=True)
    po.write_text(
        'msgid ""\nmsgstr "Content-Type: text/plain; charset=utf-8\\n"\n\n'
        'msgid "Kept"\nmsgstr "Tenuto"\n\nmsgid "Untranslated"\nmsgstr ""\n\n'
        '#, fuzzy\nmsgid "Fuzzy"\nmsgstr "Sfocato"\n\n'
        '#, python-format\nmsgid "Broken %(name)s"\nmsgstr "Rotto %(nome)s"\n\n'
        'msgid "Gone"\nmsgstr "Sparito"\n',
        encoding="utf-8",
    )
    monkeypatch.setattr("tools.i18n.catalogue_path", lambda code: tmp_path / code / "LC_MESSAGES" / "messages.po")
    kinds = sorted(problem.what.split(":")[0] for problem in problems("it", source))
    assert kinds == [
        "broken",
        "fuzzy",
        "missing (run extract)",
        "no longer in the sources (run extract)",
        "untranslated",
    ]


def test_fuzzy_entries_are_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    po = tmp_path / "it" / "LC_MESSAGES" / "messages.po"
    po.parent.mkdir(parents=True)
    po.write_text(
        'msgid ""\nmsgstr "Content-Type: text/plain; charset=utf-8\\n"\n\n'
        'msgid "Cancel"\nmsgstr "Annulla"\n\n#, fuzzy\nmsgid "Delete"\nmsgstr "Cancella forse"\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(i18n, "catalogue_path", lambda code: tmp_path / code / "LC_MESSAGES" / "messages.po")
    i18n.translations.cache_clear()
    try:
        compiled = i18n.translations("it")
        assert compiled.ugettext("Cancel") == "Annulla"
        assert compiled.ugettext("Delete") == "Delete"
    finally:
        i18n.translations.cache_clear()
