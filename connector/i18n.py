"""The reader's language: choosing it, translating into it, and keeping an explicit choice on our own links.

Catalogues are gettext ``.po`` files under ``connector/locales/<lang>/LC_MESSAGES/messages.po``, read
with Babel and compiled in memory once per process (no ``.mo`` files, no build step). ``tools/i18n.py``
updates them from the templates and the ``N_`` marks in Python.

A page's language is, in order: a supported ``?lang=`` on the request (the switch's links; an explicit
choice that our own links, forms and redirects then carry on), the choice a consumed round-trip state brought
back (``shared.kernel.reader``: an OAuth callback's URL is the EHR's or Microsoft's, never ours), the browser's
``Accept-Language``, English. No cookie is involved, because Epic's embedded browsers drop them.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.core import Locale, negotiate_locale
from babel.dates import format_date as babel_format_date
from babel.dates import format_skeleton as babel_format_skeleton
from babel.dates import format_time as babel_format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import Translations
from markupsafe import Markup

from shared.kernel import reader
from shared.kernel.i18n import Text

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "messages"
SOURCE_LANGUAGE = "en"
# The languages offered, in the order the switch lists them, each named in its own language.
LANGUAGES: Mapping[str, str] = {
    "en": "English",
    "it": "Italiano",
    "es": "Español",
    "fr": "Français",
    "de": "Deutsch",
}
LANG_PARAM = "lang"
TZ_PARAM = "tz"
MAX_ACCEPT_LANGUAGE = 512  # longer headers are read up to here; no real browser sends more
_Q_RE = re.compile(r"^q=(0(\.\d{0,3})?|1(\.0{0,3})?)$")


def supported(code: str | None) -> str | None:
    """``code`` when it names an offered language (case-insensitive), else None."""
    lowered = (code or "").strip().lower()
    return lowered if lowered in LANGUAGES else None


def preferred_languages(accept_language: str | None) -> list[str]:
    """The language tags of an ``Accept-Language`` header, most preferred first (RFC 9110 §12.5.4).

    Malformed entries are skipped; ``q=0`` means "not this one"; ties keep the header's order.
    """
    weighted: list[tuple[float, int, str]] = []
    for index, item in enumerate((accept_language or "")[:MAX_ACCEPT_LANGUAGE].split(",")):
        tag, *params = (part.strip() for part in item.split(";"))
        if not tag or not re.fullmatch(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*|\*", tag):
            continue
        quality = 1.0
        for param in params:
            if _Q_RE.match(param.replace(" ", "")):
                quality = float(param.split("=", 1)[1])
        if quality > 0:
            weighted.append((-quality, index, tag))
    return [tag for _, _, tag in sorted(weighted)]


def negotiate(accept_language: str | None) -> str:
    """The offered language that best matches ``Accept-Language`` (``it-IT`` → ``it``), else English."""
    tags = [tag for tag in preferred_languages(accept_language) if tag != "*"]
    chosen = negotiate_locale(tags, list(LANGUAGES), sep="-")
    return supported(chosen) or SOURCE_LANGUAGE


@dataclass(frozen=True)
class Language:
    """The language of one request, and whether the reader chose it (then our links carry ``?lang=``)."""

    code: str = SOURCE_LANGUAGE
    explicit: bool = False
    time_zone: str | None = None  # an IANA zone the page was given (``?tz=``), else times are shown in UTC
    page: str | None = None  # this page's path and query when it may be fetched again (the switch's target)
    origin: str | None = None  # scheme://host[:port] the request came to: absolute URLs there are ours too

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone or "UTC")


def valid_time_zone(name: str | None) -> str | None:
    """``name`` when it is an IANA time zone this machine knows, else None."""
    if not name or len(name) > 64 or not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", name):
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of zones ("Europe")
        return None
    return name


# Pages whose URL must not be fetched again: single-use OAuth returns and form posts.
_NOT_REFETCHABLE = re.compile(r"/callback$|/signin/confirm$")


def language_for(method: str, url: str, accept_language: str | None) -> Language:
    """The language of a ``method`` request for ``url`` with this ``Accept-Language`` header."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    zone = valid_time_zone(query.get(TZ_PARAM))
    refetchable = method.upper() == "GET" and not _NOT_REFETCHABLE.search(parts.path)
    page = urlunsplit(("", "", parts.path, parts.query, "")) if refetchable else None
    origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None
    chosen = supported(query.get(LANG_PARAM))
    if chosen:
        return Language(chosen, explicit=True, time_zone=zone, page=page, origin=origin)
    return Language(negotiate(accept_language), time_zone=zone, page=page, origin=origin)


# --- the current request's language ---------------------------------------------------------------

_current: ContextVar[Language | None] = ContextVar("language", default=None)
_OUTSIDE_A_REQUEST = Language()


def current() -> Language:
    """The language of the request being handled on this thread (English outside a request).

    A reader who chose a language before a round trip through the EHR or Microsoft gets it back with the
    round trip's state (``shared.kernel.reader``): once that state is consumed, this request speaks it too.
    """
    language = _current.get() or _OUTSIDE_A_REQUEST
    if language.explicit:
        return language
    chosen = reader.chosen_language()
    carried = supported(chosen) if chosen is not None else None
    if carried is None:
        return language
    carried_language = replace(language, code=carried, explicit=True)
    if language is not _OUTSIDE_A_REQUEST:
        _current.set(carried_language)  # for the rest of the request: reset with it when ``speaking`` ends
    return carried_language


@contextmanager
def speaking(language: Language) -> Iterator[None]:
    """Handle a request in ``language``: every render and redirect inside sees it, and a state of the reader's
    round trip created meanwhile keeps it when the reader chose it."""
    token = _current.set(language)
    try:
        with reader.choosing(language.code if language.explicit else None):
            yield
    finally:
        _current.reset(token)


# --- catalogues -------------------------------------------------------------------------------------


def catalogue_path(code: str) -> Path:
    return LOCALES_DIR / code / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def translations(code: str) -> Translations:
    """The catalogue of ``code``, compiled in memory on first use (fuzzy entries are left out, as msgfmt does)."""
    if code == SOURCE_LANGUAGE or supported(code) is None:
        return Translations()  # the msgids are the English text
    with catalogue_path(code).open("rb") as po:
        catalog = read_po(po, locale=code, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def gettext(message: str) -> str:
    return translations(current().code).ugettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current().code).ungettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    return translations(current().code).upgettext(context, message)


def npgettext(context: str, singular: str, plural: str, n: int) -> str:
    return translations(current().code).unpgettext(context, singular, plural, n)


def translate(value: Any) -> Any:
    """``value`` in the current language when it is marked text (a ``Text``), inside containers too.

    Anything else is returned as it is: plain strings are data (an organization's name, a URL),
    never looked up in the catalogue.
    """
    if isinstance(value, Text):
        translated = gettext(value.msgid)
        if not value.params:
            return translated
        return translated % {name: translate(param) for name, param in value.params.items()}
    if type(value) in (tuple, list):  # exactly: a named tuple or another sequence type is data, left alone
        return type(value)(translate(item) for item in value)
    if type(value) is dict:
        return {key: translate(item) for key, item in value.items()}
    return value


# --- dates and times ----------------------------------------------------------------------------------


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _local(moment: datetime) -> tuple[datetime, str]:
    """``moment`` in the reader's zone (``?tz=``) and that zone's name; without one, in the offset the moment
    carries (an EHR's appointment time, "UTC-05:00"), which is UTC for every time the connector stores."""
    language, aware = current(), _aware(moment)
    if language.time_zone:
        return aware.astimezone(language.zone), language.time_zone
    offset = aware.utcoffset()
    if not offset:
        return aware.astimezone(UTC), "UTC"
    sign, minutes = ("+" if offset.total_seconds() >= 0 else "-"), abs(int(offset.total_seconds())) // 60
    return aware, f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def format_datetime(moment: datetime | None, width: str = "medium") -> str:
    """``moment`` in the reader's language and time zone, to the minute, the zone named (``UTC`` when none was given).

    The date is written at ``width``, the time short, joined as the locale joins them ("14 mar 2026, 16:09").
    """
    if moment is None:
        return ""
    locale = Locale.parse(current().code)
    local, zone = _local(moment)
    joined = str(locale.datetime_formats[width]).format(
        babel_format_time(local, "short", locale=locale), babel_format_date(local, width, locale=locale)
    )
    return f"{joined} {zone}"


def format_clock(moment: datetime | None) -> str:
    """The time of day of ``moment`` (to the minute) in the reader's language and time zone, the zone named."""
    if moment is None:
        return ""
    local, zone = _local(moment)
    return f"{babel_format_time(local, 'short', locale=Locale.parse(current().code))} {zone}"


def format_date(moment: datetime | None, width: str = "medium") -> str:
    """The date of ``moment`` in the reader's time zone, written the reader's way."""
    if moment is None:
        return ""
    return babel_format_date(_local(moment)[0], width, locale=Locale.parse(current().code))


def format_day(day: date | None, skeleton: str = "yMMMd") -> str:
    """A calendar day (no time, no zone: a report's UTC day) the reader's way; ``skeleton`` says which fields."""
    if day is None:
        return ""
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return babel_format_skeleton(skeleton, moment, tzinfo=UTC, locale=Locale.parse(current().code))


def format_number(value: float | None) -> str:
    """A count or figure with the reader's digit grouping and decimal sign ("1,234" / "1.234")."""
    if value is None:
        return ""
    return format_decimal(value, locale=Locale.parse(current().code))


def time_element(moment: datetime | None, width: str = "medium", id: str | None = None) -> Markup:  # noqa: A002
    """A ``<time>`` element: the server's rendering, which the page's script re-renders in the browser's zone.

    ``width`` is a date width ("short", "medium", "long"), or "time" for the time of day alone; ``id`` the
    element's id, if it needs one.
    """
    if moment is None:
        return Markup("")
    iso = _aware(moment).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    text = format_clock(moment) if width == "time" else format_datetime(moment, width)
    element_id = Markup(' id="{}"').format(id) if id else Markup("")
    return Markup('<time datetime="{}" data-local="{}"{}>{}</time>').format(iso, width, element_id, text)


# --- the language switch and keeping the choice on our links ---------------------------------------


@dataclass(frozen=True)
class SwitchLink:
    code: str
    name: str
    url: str
    current: bool


def with_language(url: str, code: str) -> str:
    """``url`` with its ``lang`` parameter set to ``code`` (every other parameter kept, in order)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != LANG_PARAM]
    query.append((LANG_PARAM, code))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def switch_links() -> list[SwitchLink]:
    """The switch's links: the current page in each language.

    None for a page that cannot be fetched again (a POST's answer, an OAuth callback): following such
    a link would repeat a used sign-in, so those pages stay in the language they were rendered in.
    """
    language = current()
    if language.page is None:
        return []
    return [
        SwitchLink(code, name, with_language(language.page, code), code == language.code)
        for code, name in LANGUAGES.items()
    ]


_OWN_URL_ATTR = re.compile(r'(\s(?:href|action|data-next|data-status|data-url)=")([^"]*)(")')
_REFRESH = re.compile(r'(<meta http-equiv="refresh" content="\d+;url=)([^"]*)(")')


def keeps_language(url: str, public_base_url: str | None) -> bool:
    """Whether ``url`` is one of our own pages: under ``/api/`` of this site, its public base URL or its origin."""
    if url.startswith("/") and not url.startswith("//"):
        return url.startswith("/api/")
    bases = {(public_base_url or "").rstrip("/"), current().origin or ""} - {""}
    return any(url.startswith(base + "/api/") for base in bases)


def carry_language(url: str, public_base_url: str | None) -> str:
    """``url`` carrying the reader's explicit language choice when it is one of our pages; else unchanged.

    A URL that names a language already (the switch's links) keeps its own.
    """
    language = current()
    if not language.explicit or not keeps_language(url, public_base_url):
        return url
    if any(name == LANG_PARAM for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)):
        return url
    return with_language(url, language.code)


def carry_language_in_html(html: str, public_base_url: str | None) -> str:
    """Every link, form action and re-check URL of ours in ``html`` carrying the explicit language choice.

    Attributes are as our autoescaping templates write them (double-quoted, ``&amp;`` for ``&``).
    """
    if not current().explicit:
        return html

    def carry(match: re.Match[str]) -> str:
        raw = match.group(2).replace("&amp;", "&")
        carried = carry_language(raw, public_base_url).replace("&", "&amp;")
        return f"{match.group(1)}{carried}{match.group(3)}"

    return _REFRESH.sub(carry, _OWN_URL_ATTR.sub(carry, html))


def jinja_globals() -> dict[str, Callable[..., Any]]:
    """What templates call besides ``_``: dates and times in the reader's language and zone."""
    return {
        "format_datetime": format_datetime,
        "format_date": format_date,
        "format_clock": format_clock,
        "format_day": format_day,
        "format_number": format_number,
        "time_element": time_element,
    }
