"""Keep the translation catalogues in step with the sources.

    python -m tools.i18n extract          update every connector/locales/<lang>/LC_MESSAGES/messages.po
    python -m tools.i18n check            list untranslated, fuzzy, stale or broken entries; exit 1 if any
    python -m tools.i18n init LANG        start a catalogue for a new language (then add it to LANGUAGES)

``extract`` reads the templates (``{{ _("…") }}``, ``{% trans %}`` blocks) and the ``N_("…")`` marks in
``shared/`` and ``connector/``; new strings arrive untranslated, changed ones as fuzzy with the old
translation as a hint, and vanished ones are dropped. Translate in the ``.po`` files (any PO editor, or by
hand), remove the ``fuzzy`` flag, and run ``check``. No compiled ``.mo`` file is kept: the connector
compiles the ``.po`` files in memory when it starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from babel.core import Locale
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from connector.i18n import DOMAIN, LANGUAGES, SOURCE_LANGUAGE, catalogue_path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "Teams EHR Connector"
KEYWORDS = {"N_": None, "_": None, "gettext": None, "ngettext": (1, 2), "pgettext": ((1, "c"), 2)}
# Where marked text lives: the templates, and the Python of the product (never tests, sandbox or tools).
SOURCES = (
    ("connector", (("**/templates/**.html", "jinja2"), ("**.py", "python"))),
    ("shared", (("**.py", "python"),)),
)
JINJA_OPTIONS = {"extensions": "jinja2.ext.i18n", "trimmed": "true"}
WIDTH = 100
HEADER = """\
# {language} translation of the Teams EHR Connector's pages and messages.
# Updated by `python -m tools.i18n extract`, checked by `python -m tools.i18n check`.
#"""


def template() -> Catalog:
    """Every marked string of the sources, with where it is used."""
    catalog = Catalog(project=PROJECT, domain=DOMAIN, fuzzy=False)
    for folder, method_map in SOURCES:
        options = {pattern: JINJA_OPTIONS for pattern, method in method_map if method == "jinja2"}
        for filename, line, message, comments, context in extract_from_dir(
            ROOT / folder, list(method_map), options_map=options, keywords=KEYWORDS
        ):
            catalog.add(message, None, [(f"{folder}/{filename}", line)], auto_comments=comments, context=context)
    return catalog


def read_catalogue(code: str) -> Catalog:
    with catalogue_path(code).open("rb") as po:
        return read_po(po, locale=code, domain=DOMAIN)


def write_catalogue(code: str, catalog: Catalog) -> None:
    path = catalogue_path(code)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as po:
        # No line numbers: branches that edit the same file then do not all rewrite every catalogue.
        write_po(po, catalog, width=WIDTH, include_lineno=False, include_previous=True, ignore_obsolete=True)


def translated_languages() -> list[str]:
    return [code for code in LANGUAGES if code != SOURCE_LANGUAGE]


def extract(languages: Sequence[str]) -> None:
    source = template()
    for code in languages:
        catalog = read_catalogue(code)
        created = catalog.creation_date
        catalog.update(source, update_header_comment=False)
        catalog.creation_date = created  # the header changes only when a translator edits it
        write_catalogue(code, catalog)
        print(f"{code}: {len(catalog)} messages")


def init(code: str) -> None:
    if catalogue_path(code).exists():
        raise SystemExit(f"{catalogue_path(code)} exists already: run 'extract' instead")
    catalog = Catalog(
        locale=code,
        project=PROJECT,
        domain=DOMAIN,
        fuzzy=False,
        header_comment=HEADER.format(language=Locale.parse(code).english_name),
        version="1",
        msgid_bugs_address="the project's issue tracker",
        last_translator="Teams EHR Connector contributors",
        language_team=f"{Locale.parse(code).english_name} translators",
        revision_date=datetime.now(UTC),
    )
    catalog.update(template())
    write_catalogue(code, catalog)
    print(f"{catalogue_path(code).relative_to(ROOT)}: {len(catalog)} messages to translate")


@dataclass(frozen=True)
class Problem:
    code: str
    message: Message
    what: str

    def __str__(self) -> str:
        where = ", ".join(path for path, _ in self.message.locations[:2])
        msgid = self.message.id if isinstance(self.message.id, str) else self.message.id[0]
        return f"{self.code}: {self.what}: {msgid!r}" + (f" ({where})" if where else "")


def problems(code: str, source: Catalog | None = None) -> Iterator[Problem]:
    """What stands between ``code``'s catalogue and a complete, current, well-formed translation."""
    catalog = read_catalogue(code)
    source = source or template()
    for message in catalog:
        if not message.id:
            continue
        key = message.id if isinstance(message.id, str) else message.id[0]
        if source.get(key, message.context) is None:
            yield Problem(code, message, "no longer in the sources (run extract)")
        elif message.fuzzy:
            yield Problem(code, message, "fuzzy")
        elif not message.string or (isinstance(message.string, tuple) and not all(message.string)):
            yield Problem(code, message, "untranslated")
    for message in source:
        if message.id and catalog.get(message.id, message.context) is None:
            yield Problem(code, message, "missing (run extract)")
    for message, errors in catalog.check():
        for error in errors:
            yield Problem(code, message, f"broken: {error}")


def check(languages: Sequence[str]) -> int:
    source = template()
    found = [problem for code in languages for problem in problems(code, source)]
    for problem in found:
        print(problem)
    print(f"{len(found)} problem(s) in {len(languages)} catalogue(s), {len(source)} messages in the sources")
    return 1 if found else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.i18n", description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("extract", help="update the .po files from the sources")
    verbs.add_parser("check", help="list untranslated, fuzzy and broken entries (exit 1 if any)")
    start = verbs.add_parser("init", help="start the catalogue of a new language")
    start.add_argument("language")
    args = parser.parse_args(argv)
    if args.verb == "extract":
        extract(translated_languages())
        return 0
    if args.verb == "check":
        return check(translated_languages())
    init(args.language)
    return 0


if __name__ == "__main__":
    sys.exit(main())
