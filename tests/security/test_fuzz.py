"""Fuzz every registered HTTP function of function_app on the local Functions host.

For each HTTP function the host indexed: ``FUZZ_REQUESTS_PER_FUNCTION`` requests (200 by default, as in CI)
from a seeded generator (``FUZZ_SEED``): its own and foreign methods, route values, query strings, headers,
cookies (sometimes a real portal session and its CSRF token) and bodies, including deep JSON, huge values,
invalid UTF-8 and broken percent-encodings. Every answer must be:

* no 5xx other than a deliberate 503 (our error mapping, with one of its codes),
* free of stack traces ("Traceback", 'File "'),
* free of every secret of the test settings,

and no request may log an ERROR ("Unhandled ..." is how a 500 would show).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import pytest

from connector import portal
from connector.services import services
from sandbox.host.index import IndexedFunction
from shared.portal.sessions import PortalSession
from tests.security.edge_world import new_session, world  # noqa: F401 - fixture
from tests.support.launch_world import LaunchWorld

pytestmark = pytest.mark.azurite

REQUESTS_PER_FUNCTION = int(os.environ.get("FUZZ_REQUESTS_PER_FUNCTION", "200"))
SEED = int(os.environ.get("FUZZ_SEED", "20261205"))
DELIBERATE_503 = {"upstream_unavailable", "upstream_throttled", "storage_unavailable", "configuration_error"}
SECRET_SETTINGS = ("CONNECTOR_SECRET", "ENTRA_CLIENT_SECRET", "GRAPH_CLIENT_STATE", "SIGNING_KEYS")
SECRET_SETTINGS_WITH_PUBLIC_PARTS = ("GRAPH_ENCRYPTION_CERTIFICATE",)  # its certificate is public, its key is not
CONNECTION_STRINGS = ("AzureWebJobsStorage", "STORAGE_AMERICAS", "STORAGE_EMEA", "STORAGE_APAC")
QUERY_NAMES = (
    "iss",
    "launch",
    "state",
    "code",
    "error",
    "error_description",
    "t",
    "validationToken",
    "notice",
    "sessionId",
    "departmentId",
    "csn",
    "id_token",
    "session_state",
    "code",
    "x",
)
FORM_NAMES = ("csrf", "rows", "action", "etag", "confirm", "tenant_id", "state", "code", "id_token", "error")
MAX_QUERY_VALUE = 3000
EXTRA_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")


@dataclass
class Generator:
    """Random requests, reproducible from the seed."""

    rng: random.Random
    world: LaunchWorld
    session: PortalSession
    configuration_ids: list[str] = field(default_factory=list)

    def text(self) -> str:
        choice = self.rng.randrange(16)
        if choice == 0:
            return ""
        if choice == 1:
            return "A" * self.rng.choice((1000, 10_000, 70_000))
        if choice == 2:
            return "".join(chr(self.rng.randrange(0x20)) for _ in range(self.rng.randrange(1, 40)))
        if choice == 3:
            return "".join(chr(self.rng.randrange(0x80, 0x2FFF)) for _ in range(self.rng.randrange(1, 40)))
        if choice == 4:
            return "[" * 5000 + "]" * 5000
        if choice == 5:
            return '{"a":' * 3000 + "1" + "}" * 3000
        if choice == 6:
            return "<script>alert(1)</script>\"'><img src=x onerror=alert(1)>"
        if choice == 7:
            return "../../../../etc/passwd%00"
        if choice == 8:
            return self.world.ehr.config.fhir_base
        if choice == 9:
            return f"https://{self.rng.choice(['169.254.169.254', '10.0.0.1', 'localhost', '[::1]'])}/api/FHIR/R4"
        if choice == 10:
            return "eyJhbGciOiJub25lIn0." + "eyJ" + "A" * self.rng.randrange(0, 3000) + "."
        if choice == 11:
            return str(uuid.uuid4())
        if choice == 12:
            return self.rng.choice(self.configuration_ids)
        if choice == 13:
            return "%CSN%"
        if choice == 14:
            return str(self.rng.randrange(-(10**30), 10**30))
        return "".join(
            self.rng.choice("abcdefghijklmnop0123456789-_.~=&?#%+") for _ in range(self.rng.randrange(1, 80))
        )

    def encoded(self, value: str) -> str:
        """Percent-encoded, or now and then with broken escapes and bytes that are not UTF-8."""
        roll = self.rng.randrange(8)
        if roll == 0:
            return quote(value[:200], safe="") + "%" + self.rng.choice(["", "G", "zz", "ff", "c3", "80%80", "e2%28%a1"])
        if roll == 1:
            return "%ff%fe%00" + quote(value[:200], safe="")
        return quote(value, safe="")

    def query(self) -> str:
        """At most ~16 KB in all: front ends refuse longer request lines (Kestrel's default is 8 KB)."""
        pairs = [
            f"{self.encoded(self.rng.choice(QUERY_NAMES))}={self.encoded(self.text())[:MAX_QUERY_VALUE]}"
            for _ in range(self.rng.randrange(0, 5))
        ]
        if self.rng.random() < 0.1:
            pairs.append(pairs[0] if pairs else "iss=x")  # a repeated name
        return "&".join(pairs)

    def route(self, entry: IndexedFunction) -> str:
        assert entry.route is not None
        path = entry.route.template

        def fill(match: re.Match[str]) -> str:
            value = self.text()[:300] or "x"
            return quote(value, safe="") if self.rng.random() < 0.9 else quote(value, safe="/%")  # extra segments

        return "/api/" + re.sub(r"\{[^}]+\}", fill, path)

    def body(self) -> tuple[bytes, str | None]:
        roll = self.rng.randrange(10)
        if roll == 0:
            return b"", None
        if roll == 1:
            return bytes(
                self.rng.randrange(256) for _ in range(self.rng.randrange(1, 4000))
            ), "application/octet-stream"
        if roll == 2:
            return b"[" * 100_000 + b"]" * 100_000, "application/json"
        if roll == 3:
            return json.dumps({"value": [{"clientState": self.text(), "tenantId": self.text()}]}).encode(), (
                "application/json"
            )
        if roll == 4:
            return b"\xff\xfe" + "é".encode("latin-1") * 100, self.rng.choice(
                ["application/x-www-form-urlencoded", "application/json", "text/plain; charset=utf-8"]
            )
        if roll == 5:
            return b"x" * self.rng.choice((70_000, 1_100_000)), "application/x-www-form-urlencoded"
        fields = {self.rng.choice(FORM_NAMES): self.text()[:2000] for _ in range(self.rng.randrange(0, 6))}
        if self.rng.random() < 0.5:
            fields["csrf"] = self.session.csrf_token
        if self.rng.random() < 0.3:
            fields["rows"] = self.rng.choice(["1", "0", "11", "-1", "x", "2"])
            fields["c0-fhir_base_url"] = self.text()[:500]
        body = "&".join(f"{self.encoded(k)}={self.encoded(v)}" for k, v in fields.items()).encode("latin-1", "replace")
        return body, self.rng.choice(["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None])

    def headers(self, entry: IndexedFunction, content_type: str | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if content_type and self.rng.random() < 0.9:
            headers["content-type"] = content_type
        cookie = self.rng.randrange(5)
        name = portal.cookie_name(services().settings)
        if cookie == 0:
            headers["cookie"] = f"{name}={self.session.id}"
        elif cookie == 1:
            headers["cookie"] = (
                f"{name}={self.encoded(self.text())[:4000]}; portal_signin={self.encoded(self.text())[:200]}"
            )
        elif cookie == 2:
            headers["cookie"] = '=;;";' + "a" * 5000
        if self.rng.random() < 0.3:
            headers["x-correlation-id"] = header_safe(self.text()[:300])
        if entry.auth_level == "FUNCTION" and self.rng.random() < 0.5:
            headers["x-functions-key"] = self.world.host.function_key
        if self.rng.random() < 0.2:
            headers["accept"] = self.rng.choice(["text/html", "application/json", "*/*", "ÿ;q=x"])
        return headers

    def request(self, entry: IndexedFunction) -> tuple[str, str, dict[str, str], bytes]:
        method = self.rng.choice(entry.methods) if self.rng.random() < 0.85 else self.rng.choice(EXTRA_METHODS)
        query = self.query()
        url = self.route(entry) + (f"?{query}" if query else "")
        body, content_type = self.body() if method not in ("GET", "HEAD") or self.rng.random() < 0.1 else (b"", None)
        return method, url, self.headers(entry, content_type), body


def header_safe(value: str) -> str:
    """What HTTP/1.1 lets a header carry (visible latin-1 and spaces): the rest never reaches a server."""
    return "".join(c for c in value if (" " <= c <= "~") or ("\xa0" <= c <= "\xff"))


def secret_needles(running: LaunchWorld, public_text: str) -> list[str]:
    """Every secret value of the test settings, as strings a response must never contain.

    Multi-line secrets (PEM keys) are checked line by line; a base64 line that also occurs in what we publish on
    purpose (the JWKS, the notification certificate) is public material, not a leak, and is left out.
    """
    needles: list[str] = []
    for name in (*SECRET_SETTINGS, *SECRET_SETTINGS_WITH_PUBLIC_PARTS):
        value = running.environ.get(name, "")
        lines = [line.strip() for line in value.splitlines() if len(line.strip()) >= 24 and "-----" not in line]
        needles += lines if lines else ([value] if len(value) >= 8 else [])
    for name in CONNECTION_STRINGS:
        for part in running.environ.get(name, "").split(";"):
            if part.startswith("AccountKey=") and len(part) > 20:
                needles.append(part.removeprefix("AccountKey="))
    normalised_public = public_text.replace("-", "+").replace("_", "/")
    return [n for n in needles if n not in public_text and n not in normalised_public]


@dataclass(frozen=True)
class Finding:
    function: str
    method: str
    url: str
    status: int
    problem: str

    def __str__(self) -> str:
        return f"{self.function}: {self.method} {self.url[:160]} -> {self.status}: {self.problem}"


def check(entry: IndexedFunction, method: str, url: str, response: httpx.Response, needles: list[str]) -> list[Finding]:
    findings: list[Finding] = []
    body = response.content.decode("utf-8", errors="replace")

    def found(problem: str) -> None:
        findings.append(Finding(entry.name, method, url, response.status_code, problem))

    if response.status_code >= 500:
        code = deliberate_code(response, body)
        if response.status_code != 503 or code not in DELIBERATE_503:
            found(f"5xx (code {code!r})")
    if "Traceback" in body or 'File "' in body:
        found("stack trace in the body")
    for needle in needles:
        if needle in body or needle in str(response.headers):
            found(f"a setting's secret value ({needle[:6]}…) in the response")
    return findings


def deliberate_code(response: httpx.Response, body: str) -> str | None:
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        code = json.loads(body).get("code")
        return str(code) if code else None
    match = re.search(r"Error <code>([a-z_]+)</code>", body)
    return match.group(1) if match else None


@pytest.fixture(scope="module")
def fuzz_session(world: LaunchWorld) -> Iterator[PortalSession]:  # noqa: F811
    yield new_session(upn="admin@contoso.example", admin=True, tenant_id=world.configuration.tenant_id)


def test_fuzz_every_http_function(
    world: LaunchWorld,  # noqa: F811
    fuzz_session: PortalSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    functions = [f for f in world.host.functions if f.trigger_type == "httpTrigger"]
    assert len(functions) >= 25, [f.name for f in functions]  # every blueprint's routes, not a subset
    with httpx.Client(base_url=world.host.url, timeout=60) as http:
        public = (
            http.get("/api/.well-known/jwks.json").text
            + world.environ["GRAPH_ENCRYPTION_CERTIFICATE"].split("-----END CERTIFICATE-----")[0]
        )
    needles = secret_needles(world, public)
    assert len(needles) >= 5
    configuration_ids = [world.configuration.id, str(uuid.uuid4())]
    findings: list[Finding] = []
    sent = 0

    def fuzz_one(entry: IndexedFunction, index: int) -> list[Finding]:
        rng = random.Random(f"{SEED}:{entry.name}")
        generator = Generator(rng, world, fuzz_session, configuration_ids)
        results: list[Finding] = []
        with httpx.Client(base_url=world.host.url, timeout=60, follow_redirects=False) as http:
            for _ in range(REQUESTS_PER_FUNCTION):
                method, url, headers, body = generator.request(entry)
                raw_headers = {name.encode("ascii"): value.encode("latin-1") for name, value in headers.items()}
                request = http.build_request(method, url, headers=raw_headers, content=body)
                response = http.send(request)
                results += check(entry, method, url, response, needles)
        return results

    with caplog.at_level(logging.WARNING), ThreadPoolExecutor(max_workers=4) as pool:
        for result in pool.map(lambda pair: fuzz_one(*pair), [(f, i) for i, f in enumerate(functions)]):
            findings += result
            sent += REQUESTS_PER_FUNCTION
    errors = sorted({r.getMessage()[:200] for r in caplog.records if r.levelno >= logging.ERROR})
    assert sent == REQUESTS_PER_FUNCTION * len(functions)
    assert [str(f) for f in findings[:20]] == [], f"{len(findings)} finding(s)"
    assert errors == []
