"""The reader's language: Accept-Language negotiation, the cookie-less ?lang= switch, keeping an explicit choice
on our own links and redirects (never on the EHR's or Microsoft's), marked text, dates in the reader's zone."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from connector import i18n, web
from shared.kernel.errors import NotFound
from shared.kernel.i18n import N_, Text

PAGE = "https://connector.example.org/api/visits/v1?t=tok"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("it-IT,it;q=0.9,en-US;q=0.8,en;q=0.7", "it"),
        ("es-419", "es"),
        ("fr-CA, fr;q=0.9", "fr"),
        ("de-CH", "de"),
        ("pt-BR,pt;q=0.9,de;q=0.5", "de"),  # first offered language by preference
        ("en;q=0.2, it;q=0.8", "it"),  # quality, not order
        ("it;q=0, fr", "fr"),  # q=0: not this one
        ("pt-BR", "en"),
        ("*", "en"),
        ("", "en"),
        (None, "en"),
        ("🙂, it", "it"),  # malformed entries are skipped
        ("it;q=2, de", "it"),  # an out-of-range quality is ignored (q stays 1); ties keep the header's order
        ("x" * 600 + ",it", "en"),  # the header is read up to a bound
    ],
)
def test_accept_language_picks_the_best_offered_language(header: str | None, expected: str) -> None:
    assert i18n.negotiate(header) == expected


@pytest.mark.parametrize(
    ("url", "header", "code", "explicit"),
    [
        (PAGE + "&lang=de", "it-IT", "de", True),
        (PAGE + "&lang=DE", "it-IT", "de", True),
        (PAGE + "&lang=pt", "it-IT", "it", False),  # not offered: ignored, Accept-Language decides
        (PAGE + "&lang=", "fr", "fr", False),
        (PAGE + "&lang=../../etc", None, "en", False),
        (PAGE, "es", "es", False),
    ],
)
def test_a_supported_lang_parameter_wins_and_anything_else_is_ignored(
    url: str, header: str | None, code: str, explicit: bool
) -> None:
    language = i18n.language_for("GET", url, header)
    assert (language.code, language.explicit) == (code, explicit)


def test_the_switch_links_to_this_page_in_each_language_keeping_its_other_parameters() -> None:
    with i18n.speaking(i18n.language_for("GET", PAGE + "&lang=fr&x=1", None)):
        links = i18n.switch_links()
    assert [link.code for link in links] == ["en", "it", "es", "fr", "de"]
    assert [link.name for link in links] == ["English", "Italiano", "Español", "Français", "Deutsch"]
    assert links[1].url == "/api/visits/v1?t=tok&x=1&lang=it"
    assert [link.current for link in links] == [False, False, False, True, False]


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "https://c.example/api/portal/configurations"),
        ("GET", "https://c.example/api/launch/callback?code=c&state=s"),
        ("GET", "https://c.example/api/launch/signin/callback?code=c&state=s"),
        ("GET", "https://c.example/api/portal/ehr/callback?code=c&state=s"),
        ("POST", "https://c.example/api/launch/signin/confirm"),
    ],
)
def test_pages_that_cannot_be_fetched_again_offer_no_switch(method: str, url: str) -> None:
    """Following a switch link there would replay a used sign-in: those pages stay in their language."""
    with i18n.speaking(i18n.language_for(method, url, "it")):
        assert i18n.switch_links() == []
        assert i18n.current().code == "it"


def test_an_explicit_choice_rides_on_our_links_forms_and_redirects_only() -> None:
    base = "https://connector.example.org"
    with i18n.speaking(i18n.language_for("GET", f"{base}/api/portal?lang=es", "de")):
        assert i18n.carry_language("/api/portal/configurations/c1", None) == "/api/portal/configurations/c1?lang=es"
        assert i18n.carry_language(f"{base}/api/visits/v?t=a", None) == f"{base}/api/visits/v?t=a&lang=es"
        assert i18n.carry_language("https://ehr.example/oauth2/authorize?x=1", None) == (
            "https://ehr.example/oauth2/authorize?x=1"
        )
        assert i18n.carry_language("//evil.example/api/x", None) == "//evil.example/api/x"
        assert i18n.carry_language("/api/portal?lang=it", None) == "/api/portal?lang=it"  # the switch's own
        assert i18n.carry_language("https://public.example/api/x", "https://public.example") == (
            "https://public.example/api/x?lang=es"
        )
        html = (
            '<a href="/api/portal/configurations/c1?notice=saved">x</a><form action="/api/portal/signout">'
            '<a href="https://teams.example/join">j</a><div data-next="/api/visits/v?t=a&amp;b=c"></div>'
            '<meta http-equiv="refresh" content="5;url=/api/visits/v?t=a">'
        )
        carried = i18n.carry_language_in_html(html, None)
        assert 'href="/api/portal/configurations/c1?notice=saved&amp;lang=es"' in carried
        assert 'action="/api/portal/signout?lang=es"' in carried
        assert 'href="https://teams.example/join"' in carried
        assert 'data-next="/api/visits/v?t=a&amp;b=c&amp;lang=es"' in carried
        assert 'content="5;url=/api/visits/v?t=a&amp;lang=es"' in carried
        assert web.redirect("/api/portal?notice=deleted").headers["Location"] == "/api/portal?notice=deleted&lang=es"
        assert web.redirect("https://ehr.example/authorize").headers["Location"] == "https://ehr.example/authorize"
    with i18n.speaking(i18n.language_for("GET", f"{base}/api/portal", "de")):  # negotiated: nothing to carry
        assert i18n.carry_language("/api/portal/x", None) == "/api/portal/x"
        assert i18n.carry_language_in_html('<a href="/api/portal/x">', None) == '<a href="/api/portal/x">'


def test_marked_text_is_english_until_rendered_then_the_readers_language() -> None:
    inner = N_("only https:// addresses are accepted")
    message = N_("FHIR URL isn't valid: %(reason)s", reason=inner)
    assert message == "FHIR URL isn't valid: only https:// addresses are accepted"
    assert isinstance(message, str) and isinstance(message, Text)
    assert copy.deepcopy(message).params == message.params
    with i18n.speaking(i18n.Language("de")):
        assert i18n.translate(message) == "Die FHIR-URL ist ungültig: nur https://-Adressen sind erlaubt"
        assert i18n.translate({"e": [message], "n": 3, "plain": "Contoso"}) == {
            "e": ["Die FHIR-URL ist ungültig: nur https://-Adressen sind erlaubt"],
            "n": 3,
            "plain": "Contoso",  # plain strings are data, never looked up
        }
    assert i18n.translate(message) == str(message)  # outside a request: English


def test_error_pages_speak_the_readers_language_and_keep_their_english_problem_titles() -> None:
    error = NotFound(N_("There is no such configuration."))
    with i18n.speaking(i18n.language_for("GET", "https://c.example/api/portal/configurations/x", "it-IT")):
        page = web.error_response(error, "corr-00000001", html=True).get_body().decode()
        problem = web.error_response(error, "corr-00000001", html=False).get_body().decode()
    assert '<html lang="it">' in page
    assert "<h1>Non trovato</h1>" in page and "Questa configurazione non esiste." in page
    assert '"title":"Not found"' in problem and "There is no such configuration." in problem


def test_dates_and_times_are_written_the_readers_way_in_their_zone_or_in_labelled_utc() -> None:
    moment = datetime(2026, 3, 14, 15, 9, tzinfo=UTC)
    with i18n.speaking(i18n.Language("de")):
        assert i18n.format_datetime(moment) == "14.03.2026, 15:09 UTC"
        assert i18n.format_date(moment) == "14.03.2026"
    with i18n.speaking(i18n.language_for("GET", "https://c.example/api/x?tz=Europe/Rome&lang=it", None)):
        assert i18n.format_datetime(moment) == "14 mar 2026, 16:09 Europe/Rome"
        element = str(i18n.time_element(moment))
        assert element.startswith('<time datetime="2026-03-14T15:09:00Z" data-local="medium">')
    with i18n.speaking(i18n.Language("en")):
        assert i18n.format_datetime(moment.replace(tzinfo=None)) == "Mar 14, 2026, 3:09\u202fPM UTC"
    with i18n.speaking(i18n.Language("fr")):
        assert i18n.format_datetime(moment, "long") == "14 mars 2026, 15:09 UTC"


def test_a_time_of_day_keeps_the_offset_it_came_with_unless_the_reader_named_a_zone() -> None:
    appointment = datetime(2026, 12, 5, 9, 30, tzinfo=timezone(timedelta(hours=-5)))  # as an EHR gives it
    with i18n.speaking(i18n.Language("it")):
        assert i18n.format_clock(appointment) == "09:30 UTC-05:00"
        assert i18n.format_clock(appointment.astimezone(UTC)) == "14:30 UTC"
        element = str(i18n.time_element(appointment, "time", id="appointment-time"))
    assert element == (
        '<time datetime="2026-12-05T14:30:00Z" data-local="time" id="appointment-time">09:30 UTC-05:00</time>'
    )
    with i18n.speaking(i18n.language_for("GET", "https://c.example/api/x?tz=Europe/Berlin&lang=de", None)):
        assert i18n.format_clock(appointment) == "15:30 Europe/Berlin"
        assert i18n.format_datetime(appointment) == "05.12.2026, 15:30 Europe/Berlin"


def test_report_days_and_figures_are_written_the_readers_way() -> None:
    with i18n.speaking(i18n.Language("de")):
        assert i18n.format_day(date(2026, 3, 14)) == "14. März 2026"
        assert i18n.format_day(date(2026, 3, 14), "MMMd") == "14. März"
        assert i18n.format_number(12345) == "12.345"
    with i18n.speaking(i18n.Language("en")):
        assert i18n.format_day(date(2026, 3, 14), "MMMd") == "Mar 14"
        assert i18n.format_number(12345) == "12,345"
    assert i18n.format_day(None) == "" and i18n.format_number(None) == ""


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "Europe/Rome; x", "Europe", "x" * 80, ""])
def test_an_unknown_time_zone_is_ignored(zone: str) -> None:
    assert i18n.language_for("GET", f"https://c.example/api/x?tz={zone}", None).time_zone is None


def test_a_rendered_page_names_its_language_and_offers_the_switch() -> None:
    with i18n.speaking(i18n.language_for("GET", "https://c.example/api/portal?lang=fr", "de")):
        response = web.render("portal/signin.html", {"title": N_("Sign in")})
    body = response.get_body().decode()
    assert response.headers["Content-Language"] == "fr"
    assert '<html lang="fr">' in body
    assert "<title>Connexion · Teams EHR Connector</title>" in body
    assert 'href="/api/portal?lang=de" lang="de" hreflang="de">Deutsch</a>' in body
    assert 'aria-current="true">Français</a>' in body
    assert 'href="/api/portal/signin?lang=fr"' in body  # the page's own link keeps the choice


def test_an_imported_macro_library_speaks_each_readers_language_not_the_first_ones() -> None:
    """``portal/_changes.html`` is imported by two pages; Jinja builds an imported template's module once per
    process, so text translated at its top level would stay in the first reader's language."""
    from tests.support.page_states import PAGE_STATES

    headings = {}
    for code in ("it", "de", "it"):
        with i18n.speaking(i18n.language_for("GET", f"https://connector.example.org/api/portal?lang={code}", None)):
            body = PAGE_STATES["portal/configuration-edit-awaiting-admin"]().get_body().decode()
        row = body.split('<table class="reflow changes" id="pending-changes">', 1)[1].split("</table>", 1)[0]
        headings[code] = row
    assert "Area geografica" in headings["it"] and "Campo" in headings["it"]
    assert "Region" in headings["de"] and "Feld" in headings["de"] and "Campo" not in headings["de"]
