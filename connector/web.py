"""The edge: correlation ids, error → response mapping, HTML rendering.

Every HTTP function is wrapped by ``api`` (JSON problem responses, RFC 9457), ``page`` (HTML
error pages) or ``page_with`` (HTML error pages in a blueprint's own words, its ``ErrorPages``).
This is the one place where an exception becomes a response; no stack trace, secret or patient
datum reaches a response or a log line.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import inspect
import json
import logging
import re
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl

import azure.functions as func
from jinja2 import Environment, FileSystemLoader, select_autoescape

from connector import i18n
from shared.kernel.errors import (
    Audience,
    BadRequest,
    ConfigurationError,
    ConnectorError,
    ErrorPage,
    SignInRequired,
    UpstreamError,
)
from shared.kernel.i18n import N_
from shared.kernel.settings import get_settings

logger = logging.getLogger(__name__)

CORRELATION_HEADER = "x-correlation-id"
_CORRELATION_RE = re.compile(r"^[A-Za-z0-9-]{8,64}$")
SECURITY_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
TEMPLATES_DIR = Path(__file__).parent / "templates"
_INLINE_SCRIPT_RE = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def inline_script_hashes(folder: Path = TEMPLATES_DIR) -> tuple[str, ...]:
    """CSP ``'sha256-…'`` sources of every inline ``<script>`` in the templates, computed from the files.

    The scripts hold no template syntax, so the rendered text is the file's text and the hashes
    stay in step with the templates without anyone copying a hash by hand.
    """
    sources = set()
    for template in sorted(folder.rglob("*.html")):
        for script in _INLINE_SCRIPT_RE.findall(template.read_text(encoding="utf-8")):
            if "{{" in script or "{%" in script:
                raise ValueError(f"{template.name}: an inline script must not contain template syntax")
            digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
            sources.add(f"'sha256-{digest}'")
    return tuple(sorted(sources))


SELF = "'self'"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    f"script-src {' '.join((SELF, *inline_script_hashes()))}; frame-ancestors 'self'; "
    "form-action 'self' http: https:; base-uri 'none'"
)
HTML_HEADERS: Mapping[str, str] = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "SAMEORIGIN",
}
# Text we echo back verbatim (Graph's validation handshake): never sniffed as HTML, never allowed to load anything.
ECHO_HEADERS: Mapping[str, str] = {**SECURITY_HEADERS, "Content-Security-Policy": "default-src 'none'"}
HSTS = "max-age=31536000"  # one year; no includeSubDomains: the connector's host name may be one of many


def transport_headers() -> Mapping[str, str]:
    """``Strict-Transport-Security`` when the connector is served over https (``PUBLIC_BASE_URL``), else nothing.

    Browsers ignore HSTS over plain http, and the local demo runs on http://localhost. Unreadable
    settings add nothing: the error page that says so must still render.
    """
    try:
        public = get_settings().public_base_url
    except ConfigurationError:
        return {}
    return {"Strict-Transport-Security": HSTS} if public.lower().startswith("https://") else {}


def html_headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers of every HTML page and browser redirect: security headers, HSTS on https, then ``extra``."""
    return {**HTML_HEADERS, **transport_headers(), **(extra or {})}


_templates: Environment | None = None


def templates() -> Environment:
    """The Jinja2 environment (autoescape on for every template, gettext in the request's language), built once.

    The gettext callables read the language of the request being handled (``connector/i18n.py``), so
    one environment serves every thread; ``{% trans %}`` blocks are trimmed, as the extractor reads them.
    """
    global _templates
    if _templates is None:
        env = Environment(
            loader=FileSystemLoader(TEMPLATES_DIR),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.i18n"],
        )
        env.policies["ext.i18n.trimmed"] = True
        env.install_gettext_callables(  # type: ignore[attr-defined]  # added by the i18n extension
            i18n.gettext, i18n.ngettext, newstyle=True, pgettext=i18n.pgettext, npgettext=i18n.npgettext
        )
        env.globals.update(i18n.jinja_globals())
        env.filters["t"] = i18n.translate  # marked text reached through an object (``record.title|t``)
        _templates = env
    return _templates


def _public_base_url() -> str | None:
    try:
        return get_settings().public_base_url
    except ConfigurationError:
        return None


def correlation_id(req: func.HttpRequest) -> str:
    """The caller's correlation id when it is well-formed, else a new one."""
    supplied = req.headers.get(CORRELATION_HEADER, "")
    return supplied if _CORRELATION_RE.match(supplied) else str(uuid.uuid4())


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        mimetype="application/json",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def problem(status: int, title: str, *, code: str, correlation: str, detail: str | None = None) -> func.HttpResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "code": code}
    if detail:
        body["detail"] = detail
    body["correlationId"] = correlation
    response = func.HttpResponse(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        mimetype="application/problem+json",
        headers={**SECURITY_HEADERS, CORRELATION_HEADER: correlation},
    )
    return response


def render(
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> func.HttpResponse:
    html = (
        templates()
        .get_template(template)
        .render(
            **i18n.translate(dict(context or {})),
            language=i18n.current().code,
            language_links=i18n.switch_links(),
        )
    )
    html = i18n.carry_language_in_html(html, _public_base_url())
    return func.HttpResponse(
        html,
        status_code=status,
        mimetype="text/html",
        charset="utf-8",
        headers=html_headers({"Content-Language": i18n.current().code, **(headers or {})}),
    )


def error_page(
    template: str,
    exc: ConnectorError,
    page: ErrorPage,
    correlation: str,
    *,
    context: Mapping[str, Any] | None = None,
) -> func.HttpResponse:
    """``page`` rendered by ``template``, with the error's status and code and the correlation id to quote."""
    return render(
        template,
        {
            **(context or {}),
            "title": page.title,
            "message": page.message,
            "help": page.help,
            "code_block": page.code_block,
            "retry": page.retry,
            "error_code": exc.code,
            "correlation_id": correlation,
        },
        status=exc.status,
        headers={CORRELATION_HEADER: correlation},
    )


# --- one mapping from errors to responses -------------------------------------------------


@dataclass(frozen=True)
class ErrorPages:
    """How one kind of page explains the errors that end it.

    An error carrying its own ``page`` shows that, except in a patients' book (``audience``
    PATIENT): own pages are written for whoever can fix the cause. Any other is explained by the
    entry for the most specific of its classes in ``explain``, which must cover ``ConnectorError``;
    a patients' book explains the connector's own faults too. ``template`` renders the result.
    """

    template: str
    explain: Mapping[type[ConnectorError], Callable[[Any], ErrorPage]]
    audience: Audience | None = None

    def __post_init__(self) -> None:
        if ConnectorError not in self.explain:
            raise ValueError("an ErrorPages must explain every ConnectorError")

    def page_for(self, exc: ConnectorError) -> ErrorPage:
        if exc.page is not None and self.audience is not Audience.PATIENT:
            return exc.page
        return next(self.explain[cls](exc) for cls in type(exc).__mro__ if cls in self.explain)

    def book_for(self, exc: ConnectorError) -> ErrorPages:
        return self


@dataclass(frozen=True)
class Audiences:
    """The books of a route that serves more than one audience, chosen by the error's ``audience``.

    The audience is never read from the request: the code that raised the error knew it (a launch
    state's kind, a visit token's role) and said so with ``speaking_to``. When nobody could tell
    (an unknown ``state``), ``unknown`` speaks, which must be a book a patient may read.
    """

    books: Mapping[Audience, ErrorPages]
    unknown: Audience = Audience.PATIENT

    def book_for(self, exc: ConnectorError) -> ErrorPages:
        return self.books[exc.audience or self.unknown]


_TITLES = {
    400: N_("Bad request"),
    401: N_("Sign-in required"),
    403: N_("Not allowed"),
    404: N_("Not found"),
    405: N_("Method not allowed"),
    409: N_("Conflict"),
    413: N_("Request too large"),
    500: N_("Something went wrong"),
    502: N_("An external system returned an error"),
    503: N_("Temporarily unavailable"),
}
NOT_CONFIGURED = ErrorPage(
    N_("Temporarily unavailable"),
    N_("The connector is not configured correctly yet."),
    help=(N_("An administrator must fix its settings."),),
)
# The pages, and the problem titles and details, of every blueprint without a book of its own.
PAGES = ErrorPages(
    "error.html",
    {
        ConfigurationError: lambda exc: NOT_CONFIGURED,  # the settings' keys go to the log, not to the page
        ConnectorError: lambda exc: ErrorPage(_TITLES.get(exc.status, N_("Error")), exc.message),
    },
)
_reported_configuration_error = False


def _log(exc: BaseException, correlation: str) -> None:
    """One log line per failed request, naming the error but never its values (no secrets)."""
    global _reported_configuration_error
    if isinstance(exc, ConfigurationError):
        if not _reported_configuration_error:
            # Keys and reasons only, never values: the one clear startup error.
            logger.error("Connector settings are invalid: %s", exc.message)
            _reported_configuration_error = True
    elif isinstance(exc, ConnectorError):
        log = logger.warning if exc.status >= 500 else logger.info
        log("%s %s%s (correlation %s)", type(exc).__name__, exc.code, _upstream_detail(exc), correlation)
    else:
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?"
        logger.error("Unhandled %s at %s (correlation %s)", type(exc).__name__, where, correlation)


def _upstream_detail(exc: ConnectorError) -> str:
    """Which system failed and how (e.g. " from EHR after ReadTimeout"): type names only, never values."""
    if not isinstance(exc, UpstreamError):
        return ""
    cause = exc.__cause__ or exc.__context__
    return f" from {exc.system}" + (f" after {type(cause).__name__}" if cause is not None else "")


def error_response(
    exc: BaseException, correlation: str, *, html: bool, pages: ErrorPages | Audiences = PAGES
) -> func.HttpResponse:
    """The response for any exception: an HTML page explained by ``pages`` (its audience's book), or a problem."""
    _log(exc, correlation)
    if html and isinstance(exc, SignInRequired):
        return redirect(exc.signin_url)
    if isinstance(exc, ConnectorError):
        error, book = exc, pages.book_for(exc)
    else:  # a bug, not an error we raised: the same terse page on every blueprint; where it was is in the log
        error = ConnectorError(N_("The connector could not complete this request."))
        # ... except to a patient, who is never shown another audience's words.
        book = pages.book_for(error)
        book = book if book.audience is Audience.PATIENT else PAGES
    page = book.page_for(error)
    if html:
        return error_page(book.template, error, page, correlation)
    return problem(error.status, page.title, code=error.code, correlation=correlation, detail=page.message)


F = TypeVar("F", bound=Callable[..., Any])


def _edge(*, html: bool, pages: ErrorPages | Audiences = PAGES) -> Callable[[F], F]:
    def decorate(handler: F) -> F:
        if inspect.iscoroutinefunction(handler):
            # One model: the worker runs plain functions on its threads; only the Graph adapter is async inside.
            raise TypeError(f"{handler.__name__}: connector functions are plain def, not async def")

        @functools.wraps(handler)
        def wrapper(req: func.HttpRequest, *args: Any, **kwargs: Any) -> func.HttpResponse:
            correlation = correlation_id(req)
            language = i18n.language_for(req.method, str(req.url), req.headers.get("accept-language"))
            with i18n.speaking(language):
                try:
                    response = handler(req, *args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - the one place errors become responses
                    return error_response(exc, correlation, html=html, pages=pages)
            response.headers.setdefault(CORRELATION_HEADER, correlation)
            return cast(func.HttpResponse, response)

        return cast(F, wrapper)

    return decorate


api = _edge(html=False)
page = _edge(html=True)


def page_with(pages: ErrorPages | Audiences) -> Callable[[F], F]:
    """Like ``page``, for a blueprint that explains errors in its own words (or per audience)."""
    return _edge(html=True, pages=pages)


# --- forms, cookies, redirects ------------------------------------------------------------

MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 200
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def read_form(req: func.HttpRequest) -> dict[str, str]:
    """The urlencoded body as a dict; oversized, repeated, binary or malformed bodies → ``BadRequest`` (400 page)."""
    content_type = (req.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if content_type != FORM_CONTENT_TYPE:
        raise BadRequest(N_("This form was sent in an unexpected format. Please reload the page and try again."))
    body = req.get_body() or b""
    if len(body) > MAX_FORM_BYTES:
        raise BadRequest(N_("This form is too large. Please send fewer or shorter values."), code="form_too_large")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(N_("This form could not be read. Please reload the page and try again.")) from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form or any(ord(c) < 0x20 and c not in "\t\r\n" for c in value):
            raise BadRequest(N_("This form could not be read. Please reload the page and try again."))
        form[name] = value
    return form


def read_cookie(req: func.HttpRequest, name: str) -> str | None:
    raw = req.headers.get("cookie")
    if not raw:
        return None
    jar = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def cookie_header(
    name: str, value: str, *, secure: bool, path: str, max_age: int | None = None, same_site: str = "Lax"
) -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Lax (or as given), Secure unless the site runs on http localhost."""
    if same_site not in ("Lax", "Strict", "None"):
        raise ValueError(same_site)
    if same_site == "None" and not secure:
        raise ValueError("browsers refuse SameSite=None without Secure")
    parts = [f"{name}={value}", f"Path={path}", "HttpOnly", f"SameSite={same_site}"]
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)


def sign_in_binding_cookie(name: str, value: str, *, path: str, max_age: int) -> str:
    """The cookie binding a Microsoft sign-in to the browser that started it (login CSRF defence).

    Entra returns with a cross-site form POST, which carries only ``SameSite=None`` cookies, and
    browsers accept those only with ``Secure``. Chromium treats http://localhost and 127.0.0.1 as
    secure contexts, so the same attributes work for the local demo over plain http.
    """
    return cookie_header(name, value, secure=True, same_site="None", path=path, max_age=max_age)


def redirect(location: str, *, status: int = 303, headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    """A browser redirect; to one of our own pages it carries the reader's explicit language choice."""
    location = i18n.carry_language(location, _public_base_url())
    return func.HttpResponse(status_code=status, headers=html_headers({"Location": location, **(headers or {})}))
