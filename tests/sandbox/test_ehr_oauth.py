"""SMART discovery, EHR and standalone launches, and every rejection of the authorize and token endpoints."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from sandbox.ehr import EhrSandbox
from tests.sandbox.ehr_support import *  # noqa: F403
from tests.sandbox.ehr_support import (
    APP,
    PUBLIC_APP,
    REDIRECT,
    SECRET,
    SECRET_APP,
    ClientKeys,
    assertion,
    authorize_params,
    code_for,
    launch_value,
    pkce,
    redirect_query,
    token_request,
)


def test_smart_configuration_advertises_endpoints_and_capabilities(http: httpx.Client, ehr: EhrSandbox) -> None:
    response = http.get("/api/FHIR/R4/.well-known/smart-configuration", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    assert doc["issuer"] == ehr.config.origin + "/oauth2"
    assert doc["authorization_endpoint"] == ehr.config.origin + "/oauth2/authorize"
    assert doc["token_endpoint"] == ehr.config.origin + "/oauth2/token"
    assert doc["jwks_uri"].endswith("/api/epic/2019/Security/Open/PublicKeys/530005/OIDC")
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "client_credentials"} <= set(doc["grant_types_supported"])
    assert {"private_key_jwt", "client_secret_basic", "client_secret_post"} <= set(
        doc["token_endpoint_auth_methods_supported"]
    )
    for capability in (
        "launch-ehr",
        "launch-standalone",
        "client-confidential-asymmetric",
        "client-confidential-symmetric",
        "context-ehr-patient",
        "context-ehr-encounter",
        "permission-user",
        "permission-patient",
        "sso-openid-connect",
    ):
        assert capability in doc["capabilities"]
    assert {"openid", "fhirUser"} <= set(doc["scopes_supported"])


def test_metadata_has_oauth_uris_extension(http: httpx.Client, ehr: EhrSandbox) -> None:
    response = http.get("/api/FHIR/R4/metadata", headers={"Accept": "application/fhir+json"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    oauth = statement["rest"][0]["security"]["extension"][0]
    assert oauth["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    uris = {e["url"]: e["valueUri"] for e in oauth["extension"]}
    assert uris == {"authorize": ehr.config.authorize_url, "token": ehr.config.token_url}
    xml_only = http.get("/api/FHIR/R4/metadata", headers={"Accept": "application/fhir+xml"})
    assert xml_only.status_code == 406
    assert xml_only.json()["resourceType"] == "OperationOutcome"


def test_openid_configuration_and_jwks(http: httpx.Client, ehr: EhrSandbox) -> None:
    for path in ("/oauth2/.well-known/openid-configuration", "/api/FHIR/R4/.well-known/openid-configuration"):
        assert http.get(path).json()["jwks_uri"] == ehr.config.jwks_url
    keys = http.get(urlsplit(ehr.config.jwks_url).path).json()["keys"]
    assert keys[0]["kid"] == ehr.key.kid and keys[0]["kty"] == "RSA" and "d" not in keys[0]


def verify_id_token(http: httpx.Client, ehr: EhrSandbox, id_token: str, audience: str) -> dict[str, object]:
    header = jwt.get_unverified_header(id_token)
    assert header["alg"] == "RS256"
    jwks = jwt.PyJWKSet.from_dict(http.get(urlsplit(ehr.config.jwks_url).path).json())
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims: dict[str, object] = jwt.decode(
        id_token, key.key, algorithms=["RS256"], audience=audience, issuer=ehr.config.issuer
    )
    return claims


def test_full_ehr_launch_with_private_key_jwt(http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys) -> None:
    url, launch = launch_value(ehr, appointment="e-appt-001", user="e-prac-smith")
    query = parse_qs(urlsplit(url).query)
    assert url.startswith("https://connector.example/api/launch/cfg-1/provider?")
    assert query["iss"] == [ehr.config.fhir_base]
    assert query["sessionId"] == ["1000001"] and query["departmentId"] == ["10501101"]

    verifier, challenge = pkce()
    params = authorize_params(ehr, challenge, launch=launch)
    params["scope"] += " offline_access Observation.read"  # neither is granted
    callback = redirect_query(http.get("/oauth2/authorize", params=params))
    assert callback["state"] == params["state"]

    response = token_request(http, ehr, client_keys, callback["code"], verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0 and body["access_token"]
    assert set(body["scope"].split()) == {"launch", "openid", "fhirUser", "patient/*.read", "user/*.read"}
    assert body["state"] == params["state"]
    assert body["patient"] == "e-pat-rivera"
    assert body["encounter"] == "e-enc-001"
    assert body["appointment"] == "e-appt-001"
    assert body["location"] == "e-loc-virtual-care"
    assert body["loginDepartment"] == "e-loc-virtual-care"
    assert body["need_patient_banner"] == "false"  # a string, like Epic
    # The launch URL's context tokens are not echoed: only fields the client's integration is configured for.
    assert "sessionId" not in body and "departmentId" not in body and "csn" not in body
    assert body["__epic.dstu2.patient"]
    assert "refresh_token" not in body

    claims = verify_id_token(http, ehr, body["id_token"], APP)
    assert claims["sub"] == "e-prac-smith"
    assert claims["fhirUser"] == ehr.config.fhir_base + "/Practitioner/e-prac-smith"
    assert claims["nonce"] == params["nonce"]
    assert int(claims["exp"]) - int(claims["iat"]) == 300  # type: ignore[call-overload]

    patient = http.get("/api/FHIR/R4/Patient/e-pat-rivera", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert patient.status_code == 200 and patient.json()["id"] == "e-pat-rivera"


def test_authorize_by_post_and_es384_assertion(http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys) -> None:
    _, launch = launch_value(ehr, appointment="e-appt-003", user="e-prac-smith")
    verifier, challenge = pkce()
    params = authorize_params(ehr, challenge, launch=launch)
    callback = redirect_query(http.post("/oauth2/authorize", data=params))
    response = token_request(
        http,
        ehr,
        client_keys,
        callback["code"],
        verifier,
        client_assertion=assertion(client_keys, ehr.config.token_url, alg="ES384"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["encounter"] == "e-enc-003"


def test_patient_launch_from_mychart_gives_patient_subject(
    http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys
) -> None:
    url, launch = launch_value(ehr, kind="patient", appointment="e-appt-002", user="e-pat-patel")
    assert url.startswith("https://connector.example/api/launch/cfg-1/patient?sessionId=1000002&")
    verifier, challenge = pkce()
    callback = redirect_query(http.get("/oauth2/authorize", params=authorize_params(ehr, challenge, launch=launch)))
    body = token_request(http, ehr, client_keys, callback["code"], verifier).json()
    assert body["patient"] == "e-pat-patel" and body["appointment"] == "e-appt-002"
    assert "loginDepartment" not in body
    claims = verify_id_token(http, ehr, body["id_token"], APP)
    assert claims["sub"] == "e-pat-patel"
    assert claims["fhirUser"] == ehr.config.fhir_base + "/Patient/e-pat-patel"


def test_standalone_launch_via_sign_in_page(http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys) -> None:
    verifier, challenge = pkce()
    params = authorize_params(ehr, challenge, scope="openid fhirUser user/*.read")
    page = http.get("/oauth2/authorize", params=params)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Erin Analyst" in page.text and "Dr. Jordan Smith" in page.text
    pending = re.search(r'name="request" value="([^"]+)"', page.text)
    assert pending
    signed_in = http.post("/oauth2/authorize/signin", data={"request": pending.group(1), "user": "e-prac-analyst"})
    callback = redirect_query(signed_in)
    assert callback["state"] == params["state"]
    body = token_request(http, ehr, client_keys, callback["code"], verifier).json()
    for absent in ("encounter", "appointment", "loginDepartment", "patient", "sessionId"):
        assert absent not in body
    claims = verify_id_token(http, ehr, body["id_token"], APP)
    assert claims["sub"] == "e-prac-analyst"
    replay = http.post("/oauth2/authorize/signin", data={"request": pending.group(1), "user": "e-prac-analyst"})
    assert replay.status_code == 400


def test_standalone_provider_picks_a_patient_for_launch_patient(
    http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys
) -> None:
    verifier, challenge = pkce()
    params = authorize_params(ehr, challenge, scope="openid fhirUser launch/patient patient/*.read")
    page = http.get("/oauth2/authorize", params=params)
    assert '<select id="patient" name="patient">' in page.text
    pending = re.search(r'name="request" value="([^"]+)"', page.text)
    assert pending
    form = {"request": pending.group(1), "user": "e-prac-lee", "patient": "e-pat-novak"}
    callback = redirect_query(http.post("/oauth2/authorize/signin", data=form))
    body = token_request(http, ehr, client_keys, callback["code"], verifier).json()
    assert body["patient"] == "e-pat-novak" and "encounter" not in body
    assert body["need_patient_banner"] == "true"
    patient = http.get("/api/FHIR/R4/Patient/e-pat-novak", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert patient.status_code == 200


def test_standalone_sign_in_cancel_redirects_access_denied(http: httpx.Client, ehr: EhrSandbox) -> None:
    _, challenge = pkce()
    params = authorize_params(ehr, challenge, scope="openid fhirUser")
    page = http.get("/oauth2/authorize", params=params)
    pending = re.search(r'name="request" value="([^"]+)"', page.text)
    assert pending
    callback = redirect_query(
        http.post("/oauth2/authorize/signin", data={"request": pending.group(1), "action": "cancel"})
    )
    assert callback["error"] == "access_denied" and callback["state"] == params["state"]


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"aud": "https://other.example/api/FHIR/R4"}, "invalid_request"),
        ({"aud": None}, "invalid_request"),
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "openid fhirUser patient/*.read"}, "invalid_scope"),  # EHR launch without the launch scope
    ],
)
def test_authorize_rejections_redirect_with_error(
    http: httpx.Client, ehr: EhrSandbox, override: dict[str, str | None], error: str
) -> None:
    _, launch = launch_value(ehr)
    _, challenge = pkce()
    params = authorize_params(ehr, challenge, launch=launch)
    params.update({k: v for k, v in override.items() if v is not None})
    for key in [k for k, v in override.items() if v is None]:
        params.pop(key, None)
    callback = redirect_query(http.get("/oauth2/authorize", params=params))
    assert callback["error"] == error
    assert callback["error_description"]
    assert callback["state"] == params["state"]
    assert "code" not in callback


def test_aud_with_trailing_slash_is_accepted(http: httpx.Client, ehr: EhrSandbox) -> None:
    _, launch = launch_value(ehr)
    _, challenge = pkce()
    params = authorize_params(ehr, challenge, launch=launch, aud=ehr.config.fhir_base + "/")
    assert "code" in redirect_query(http.get("/oauth2/authorize", params=params))


def test_launch_is_single_use_and_bound_to_its_client(http: httpx.Client, ehr: EhrSandbox) -> None:
    _, launch = launch_value(ehr)
    _, challenge = pkce()
    assert "code" in redirect_query(
        http.get("/oauth2/authorize", params=authorize_params(ehr, challenge, launch=launch))
    )
    reused = redirect_query(http.get("/oauth2/authorize", params=authorize_params(ehr, challenge, launch=launch)))
    assert reused["error"] == "invalid_request" and "already used" in reused["error_description"]
    unknown = redirect_query(http.get("/oauth2/authorize", params=authorize_params(ehr, challenge, launch="forged")))
    assert unknown["error"] == "invalid_request"
    _, other = launch_value(ehr)
    foreign = http.get("/oauth2/authorize", params=authorize_params(ehr, challenge, launch=other, client_id=SECRET_APP))
    assert redirect_query(foreign)["error"] == "invalid_request"


def test_expired_launch_is_rejected(http: httpx.Client, ehr: EhrSandbox) -> None:
    _, launch = launch_value(ehr)
    with ehr.state.lock:
        ehr.state.launches[launch].expires_at = time.time() - 1
    _, challenge = pkce()
    callback = redirect_query(http.get("/oauth2/authorize", params=authorize_params(ehr, challenge, launch=launch)))
    assert callback["error"] == "invalid_request" and "expired" in callback["error_description"]


@pytest.mark.parametrize(
    "override",
    [{"client_id": "nobody"}, {"redirect_uri": REDIRECT + "/other"}, {"redirect_uri": None}, {"client_id": None}],
)
def test_unknown_client_or_redirect_uri_gets_an_error_page_never_a_redirect(
    http: httpx.Client, ehr: EhrSandbox, override: dict[str, str | None]
) -> None:
    _, launch = launch_value(ehr)
    _, challenge = pkce()
    params = authorize_params(ehr, challenge, launch=launch)
    for key, value in override.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    response = http.get("/oauth2/authorize", params=params)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "text/html" in response.headers["content-type"]


def test_code_is_single_use_and_reuse_revokes_tokens(
    http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys
) -> None:
    verifier, challenge = pkce()
    code = code_for(http, ehr, (verifier, challenge))
    first = token_request(http, ehr, client_keys, code, verifier)
    assert first.status_code == 200
    access = first.json()["access_token"]
    again = token_request(http, ehr, client_keys, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert again.headers["cache-control"] == "no-store"
    revoked = http.get("/api/FHIR/R4/Patient/e-pat-rivera", headers={"Authorization": f"Bearer {access}"})
    assert revoked.status_code == 401


def test_wrong_redirect_uri_and_wrong_verifier_fail(
    http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys
) -> None:
    verifier, challenge = pkce()
    code = code_for(http, ehr, (verifier, challenge))
    wrong_uri = token_request(http, ehr, client_keys, code, verifier, redirect_uri=REDIRECT + "x")
    assert wrong_uri.status_code == 400 and wrong_uri.json()["error"] == "invalid_grant"
    verifier, challenge = pkce()
    code = code_for(http, ehr, (verifier, challenge))
    wrong_verifier = token_request(http, ehr, client_keys, code, pkce()[0])
    assert wrong_verifier.json() == {"error": "invalid_grant", "error_description": "PKCE verification failed"}
    code = code_for(http, ehr, (verifier, challenge))
    assert token_request(http, ehr, client_keys, code, None).json()["error"] == "invalid_request"  # type: ignore[arg-type]


def test_expired_code_is_rejected(http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys) -> None:
    verifier, challenge = pkce()
    code = code_for(http, ehr, (verifier, challenge))
    with ehr.state.lock:
        ehr.state.codes[code].expires_at = time.time() - 1
    response = token_request(http, ehr, client_keys, code, verifier)
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda k, url: assertion(k, url, lifetime=-120), "expired"),
        (lambda k, url: assertion(k, url, lifetime=3600), "5 minutes"),
        (lambda k, url: assertion(k, "https://wrong.example/token"), "aud"),
        (lambda k, url: assertion(k, url, sub="someone-else"), "sub"),
        (lambda k, url: assertion(k, url, "nobody"), "unknown client"),
        (lambda k, url: assertion(k, url, kid="no-such-kid"), "kid"),
        (lambda k, url: assertion(k, url, jti="x" * 152), "jti"),
        (lambda k, url: assertion(k, url, alg="PS256"), "alg"),
        (lambda k, url: assertion(k, url)[:-4] + "AAAA", "invalid"),
        (lambda k, url: "not-a-jwt", "not a JWT"),
    ],
)
def test_bad_client_assertions_are_invalid_client(
    http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys, make: object, why: str
) -> None:
    verifier, challenge = pkce()
    code = code_for(http, ehr, (verifier, challenge))
    response = token_request(
        http, ehr, client_keys, code, verifier, client_assertion=make(client_keys, ehr.config.token_url)
    )  # type: ignore[operator]
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client"
    assert why in body["error_description"]


def test_replayed_assertion_is_rejected(http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys) -> None:
    signed = assertion(client_keys, ehr.config.token_url)
    verifier, challenge = pkce()
    ok = token_request(
        http, ehr, client_keys, code_for(http, ehr, (verifier, challenge)), verifier, client_assertion=signed
    )
    assert ok.status_code == 200
    verifier, challenge = pkce()
    replay = token_request(
        http, ehr, client_keys, code_for(http, ehr, (verifier, challenge)), verifier, client_assertion=signed
    )
    assert replay.status_code == 401 and "jti" in replay.json()["error_description"]


def test_jwks_is_cached_and_refetched_for_a_new_kid(
    http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys
) -> None:
    for _ in range(2):
        verifier, challenge = pkce()
        assert token_request(http, ehr, client_keys, code_for(http, ehr, (verifier, challenge)), verifier).is_success
    before = client_keys.hits
    verifier, challenge = pkce()
    assert token_request(http, ehr, client_keys, code_for(http, ehr, (verifier, challenge)), verifier).is_success
    assert client_keys.hits == before  # served from the cache
    client_keys.rsa_kid = "rsa-2"  # rotation: the JWKS now publishes the key under a new kid
    verifier, challenge = pkce()
    assert token_request(http, ehr, client_keys, code_for(http, ehr, (verifier, challenge)), verifier).is_success
    assert client_keys.hits == before + 1


def test_client_secret_basic_and_post(http: httpx.Client, ehr: EhrSandbox) -> None:
    def code() -> tuple[str, str]:
        verifier, challenge = pkce()
        _, launch = launch_value(ehr)
        ehr.state.launches[launch].client_id = SECRET_APP
        params = authorize_params(ehr, challenge, launch=launch, client_id=SECRET_APP)
        return redirect_query(http.get("/oauth2/authorize", params=params))["code"], verifier

    value, verifier = code()
    form = {"grant_type": "authorization_code", "code": value, "redirect_uri": REDIRECT, "code_verifier": verifier}
    assert http.post("/oauth2/token", data=form, auth=(SECRET_APP, SECRET)).status_code == 200
    value, verifier = code()
    form.update(code=value, code_verifier=verifier)
    encoded = httpx.BasicAuth(SECRET_APP, "s3cret%2Fwith%2Bchars")  # URL-encoded secret, as Epic's text says
    assert http.post("/oauth2/token", data=form, auth=encoded).status_code == 200
    value, verifier = code()
    form.update(code=value, code_verifier=verifier, client_id=SECRET_APP, client_secret=SECRET)
    assert http.post("/oauth2/token", data=form).status_code == 200
    value, verifier = code()
    form.update(code=value, code_verifier=verifier, client_secret="wrong")
    bad = http.post("/oauth2/token", data=form)
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    bad_basic = http.post("/oauth2/token", data={"grant_type": "authorization_code"}, auth=(SECRET_APP, "nope"))
    assert bad_basic.status_code == 401 and bad_basic.headers["www-authenticate"].startswith("Basic")


def test_confidential_client_must_authenticate_and_public_client_may_not_use_secret(
    http: httpx.Client, ehr: EhrSandbox
) -> None:
    verifier, challenge = pkce()
    code = code_for(http, ehr, (verifier, challenge))
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "client_id": APP,
    }
    response = http.post("/oauth2/token", data=form)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    _, challenge = pkce()
    standalone = http.get(
        "/oauth2/authorize", params=authorize_params(ehr, challenge, client_id=PUBLIC_APP, scope="openid fhirUser")
    )
    assert standalone.status_code == 200


def test_token_endpoint_input_errors(http: httpx.Client, ehr: EhrSandbox) -> None:
    wrong_type = http.post("/oauth2/token", json={"grant_type": "authorization_code"})
    assert wrong_type.status_code == 400 and wrong_type.json()["error"] == "invalid_request"
    unsupported = http.post("/oauth2/token", data={"grant_type": "password"})
    assert unsupported.status_code == 400 and unsupported.json()["error"] == "unsupported_grant_type"
    unknown_client = http.post("/oauth2/token", data={"grant_type": "authorization_code", "client_id": "nobody"})
    assert unknown_client.status_code == 401 and unknown_client.json()["error"] == "invalid_client"
