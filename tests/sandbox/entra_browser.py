"""Drive the sandbox Entra sign-in page the way a browser would, with httpx and the standard HTML parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx


@dataclass
class Form:
    action: str
    method: str
    inputs: dict[str, str] = field(default_factory=dict)
    buttons: list[dict[str, str]] = field(default_factory=list)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(Form(values.get("action", ""), values.get("method", "get").lower()))
        elif tag == "input" and self.forms and "name" in values:
            self.forms[-1].inputs[values["name"]] = values.get("value", "")
        elif tag == "button" and self.forms:
            self.forms[-1].buttons.append(values)


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def choose_account(browser: httpx.Client, auth_uri: str, upn: str) -> httpx.Response:
    """GET the authorize page, then press the button of the account ``upn`` (its form posts the choice)."""
    page = browser.get(auth_uri)
    assert page.status_code == 200, page.text
    for form in parse_forms(page.text):
        for button in form.buttons:
            if button.get("data-upn") == upn:
                data = {**form.inputs, button["name"]: button["value"]}
                return browser.post(urljoin(str(page.url), form.action), data=data)
    raise AssertionError(f"no account {upn} on the sign-in page")


def authorization_response(response: httpx.Response) -> dict[str, str]:
    """What the redirect URI receives: the query/fragment of a 302, or the fields of a form_post page."""
    if response.status_code == 302:
        location = urlsplit(response.headers["location"])
        return dict(parse_qsl(location.fragment or location.query))
    assert response.status_code == 200, response.text
    forms = parse_forms(response.text)
    assert len(forms) == 1 and forms[0].method == "post", response.text
    return forms[0].inputs
