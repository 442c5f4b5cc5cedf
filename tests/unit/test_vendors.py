"""Vendor profiles (``shared/ehr/vendors.py``) and the generic-SMART rules they feed: headers, scopes, writeback
modes, the user key of an EHR that names users by ``sub`` alone, client authentication and the FHIR version."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shared.configurations.model import Vendor, WritebackMode
from shared.ehr.launch_context import SUBJECT_USER_TYPE, asserted_context, user_reference
from shared.ehr.smart import DiscoveryError, SmartClient
from shared.ehr.vendors import PROFILES, profile_for
from shared.http.outbound import OutboundPolicy, SafeHttp
from shared.kernel.errors import Forbidden

FHIR = "https://fhir-ehr.example/r4/5b0e5e1c-7f2a-4d7e-9c53-0a1d2e3f4a5b"


def test_every_vendor_has_a_profile_and_only_epic_is_told_our_client_id() -> None:
    assert set(PROFILES) == set(Vendor)
    assert profile_for("epic").client_headers("cid") == {"Epic-Client-ID": "cid"}
    assert profile_for(Vendor.ORACLE).client_headers("cid") == {}
    assert profile_for(Vendor.SMART).client_headers("cid") == {}
    with pytest.raises(ValueError):
        profile_for("cerner")


def test_only_epic_records_carry_context_tokens_and_oracle_scopes_name_each_resource() -> None:
    assert "%CSN%" in profile_for(Vendor.EPIC).provider_context_tokens
    for vendor in (Vendor.ORACLE, Vendor.SMART):
        assert profile_for(vendor).provider_context_tokens == profile_for(vendor).patient_context_tokens == ""
        assert "Location" not in profile_for(vendor).provider_scopes  # no departmentId to confirm
    assert "*" not in profile_for(Vendor.ORACLE).patient_scopes
    for profile in PROFILES.values():
        assert profile.provider_scopes.startswith("launch openid fhirUser ")
        assert profile.patient_scopes.startswith("launch openid fhirUser ")


@pytest.mark.parametrize("vendor", [Vendor.ORACLE, Vendor.SMART])
def test_epic_writeback_is_epics_alone(vendor: Vendor) -> None:
    profile = profile_for(vendor)
    assert not profile.allows_writeback(WritebackMode.EPIC)
    assert profile.writeback_refusal(WritebackMode.EPIC) == (
        f"{profile.label} has no Epic SetExternalConnectionStatus writeback: choose FHIR AuditEvent or "
        "no writeback (off)."
    )
    assert profile.writeback_refusal(WritebackMode.FHIR_AUDIT_EVENT) is None
    assert profile.writeback_refusal(WritebackMode.NONE) is None
    assert profile_for(Vendor.EPIC).writeback_refusal(WritebackMode.EPIC) is None


def test_a_relative_or_absolute_fhir_user_names_the_resource() -> None:
    for fhir_user in (f"{FHIR}/Practitioner/12742069", "Practitioner/12742069"):
        claims = {"sub": "opaque", "fhirUser": fhir_user}
        assert user_reference(claims, provider_launch=True, sub_is_fhir_id=False) == "Practitioner/12742069"


def test_sub_alone_is_a_fhir_id_only_where_the_vendor_says_so() -> None:
    assert user_reference({"sub": "e-prac-1"}, provider_launch=True, sub_is_fhir_id=True) == "Practitioner/e-prac-1"
    key = user_reference({"sub": "portal"}, provider_launch=True, sub_is_fhir_id=False)
    assert key == f"{SUBJECT_USER_TYPE}/portal"  # stable: the same subject, the same key
    assert user_reference({"sub": "portal"}, provider_launch=True, sub_is_fhir_id=False) == key
    assert user_reference({"sub": "portal"}, provider_launch=False, sub_is_fhir_id=False) == key


def test_a_patient_fhir_user_is_still_refused_on_a_provider_launch() -> None:
    with pytest.raises(Forbidden):
        user_reference({"sub": "x", "fhirUser": f"{FHIR}/Patient/1"}, provider_launch=True, sub_is_fhir_id=False)


def test_oracles_token_response_is_read_leniently() -> None:
    fields: dict[str, Any] = {
        "patient": "12724065",
        "encounter": "97953483",
        "need_patient_banner": False,
        "smart_style_url": "https://smart.example/styles/smart-v1.json",
        "tenant": "5b0e5e1c-7f2a-4d7e-9c53-0a1d2e3f4a5b",
        "username": "portal",
        "user": "12742069",
        "expires_in": 570,
    }
    claims = {"sub": "opaque", "fhirUser": f"{FHIR}/Practitioner/12742069"}
    asserted = asserted_context(fields, claims, provider_launch=True, sub_is_fhir_id=False)
    assert (asserted.user, asserted.encounter, asserted.appointment, asserted.csn) == (
        "Practitioner/12742069",
        "97953483",
        None,
        None,
    )


def smart_client(documents: dict[str, Any], seen: list[httpx.Request]) -> SmartClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        document = documents.get(request.url.path.rsplit("/", 1)[-1])
        return httpx.Response(404) if document is None else httpx.Response(200, json=document)

    return SmartClient(SafeHttp(OutboundPolicy(), transport=httpx.MockTransport(handler)), None)


def smart_configuration(**extra: Any) -> dict[str, Any]:
    return {
        "authorization_endpoint": "https://auth.example/authorize",
        "token_endpoint": "https://auth.example/token",
        "code_challenge_methods_supported": ["S256"],
        "capabilities": ["launch-ehr"],
        **extra,
    }


def test_discovery_refuses_a_token_endpoint_without_private_key_jwt() -> None:
    document = smart_configuration(token_endpoint_auth_methods_supported=["client_secret_basic"])
    with pytest.raises(DiscoveryError) as refused:
        smart_client({"smart-configuration": document}, []).discover(FHIR)
    assert "does not accept private_key_jwt" in refused.value.message and "client_secret_basic" in refused.value.message


def test_discovery_accepts_private_key_jwt_or_an_unadvertised_list() -> None:
    oracle = smart_configuration(token_endpoint_auth_methods_supported=["client_secret_basic", "private_key_jwt"])
    assert smart_client({"smart-configuration": oracle}, []).discover(FHIR).token_endpoint_auth_methods == (
        "client_secret_basic",
        "private_key_jwt",
    )
    assert smart_client({"smart-configuration": smart_configuration()}, []).discover(FHIR).token_endpoint


@pytest.mark.parametrize(("vendor", "named"), [(Vendor.EPIC, "cid"), (Vendor.ORACLE, None), (None, None)])
def test_discovery_headers_follow_the_vendor(vendor: Vendor | None, named: str | None) -> None:
    seen: list[httpx.Request] = []
    config = smart_client({"smart-configuration": smart_configuration()}, seen).discover(
        FHIR, client_id="cid", vendor=vendor
    )
    assert seen[0].headers.get("epic-client-id") == named
    assert dict(config.client_headers).get("Epic-Client-ID") == named


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}, "4.0.1"),
        ({"resourceType": "CapabilityStatement", "fhirVersion": "3.0.2"}, "3.0.2"),
        ({"resourceType": "CapabilityStatement"}, DiscoveryError),
        ({"resourceType": "OperationOutcome"}, DiscoveryError),
        (None, DiscoveryError),
    ],
)
def test_the_fhir_version_comes_from_the_capability_statement(document: Any, expected: Any) -> None:
    client = smart_client({"metadata": document} if document else {}, [])
    if expected is DiscoveryError:
        with pytest.raises(DiscoveryError):
            client.fhir_version(FHIR)
    else:
        assert client.fhir_version(FHIR) == expected
