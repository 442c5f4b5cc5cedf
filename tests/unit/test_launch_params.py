"""Reading launch requests and authorization responses: strict, and kind to mangled launch tokens."""

from __future__ import annotations

import pytest

from shared.ehr.launch_params import InvalidLaunch, parse_authorization_response, parse_launch

ISS = "https%3A%2F%2Fehr.example%2Finterconnect%2Fapi%2FFHIR%2FR4"


def test_reads_iss_launch_and_context_tokens() -> None:
    params = parse_launch(f"iss={ISS}&launch=abc&sessionId=1853&departmentId=10501")
    assert params.iss == "https://ehr.example/interconnect/api/FHIR/R4"
    assert params.launch == "abc"
    assert params.session_id == "1853" and params.department_id == "10501"


def test_plus_in_launch_is_kept_and_a_mangled_space_is_restored() -> None:
    assert parse_launch(f"iss={ISS}&launch=a+b%2Bc").launch == "a+b+c"
    assert parse_launch(f"iss={ISS}&launch=a%20b").launch == "a+b"


def test_other_parameters_are_form_decoded() -> None:
    assert parse_launch(f"iss={ISS}&launch=x&departmentId=10+1").department_id == "10 1"


def test_post_body_counts_like_the_query() -> None:
    params = parse_launch("", f"iss={ISS}&launch=eyJ+x")
    assert params.launch == "eyJ+x"


@pytest.mark.parametrize(
    "query",
    [
        "launch=abc",
        f"iss={ISS}",
        f"iss={ISS}&launch=",
        "iss=&launch=abc",
        "",
    ],
)
def test_missing_parameters_are_refused(query: str) -> None:
    with pytest.raises(InvalidLaunch) as caught:
        parse_launch(query)
    assert caught.value.code == "launch_parameter_missing"


@pytest.mark.parametrize(
    ("query", "body"),
    [
        (f"iss={ISS}&launch=a&launch=b", None),
        (f"iss={ISS}&iss={ISS}&launch=a", None),
        (f"iss={ISS}&launch=a", "launch=b"),
        (f"iss={ISS}&launch=a&sessionId=1&sessionId=2", None),
    ],
)
def test_repeated_parameters_are_refused(query: str, body: str | None) -> None:
    with pytest.raises(InvalidLaunch) as caught:
        parse_launch(query, body)
    assert caught.value.code == "parameter_repeated"


def test_control_characters_and_bad_encoding_are_refused() -> None:
    with pytest.raises(InvalidLaunch):
        parse_launch(f"iss={ISS}&launch=a%0Ab")
    with pytest.raises(InvalidLaunch):
        parse_launch(f"iss={ISS}&launch=%FF%FE")


def test_unknown_parameters_are_ignored_and_none_context_is_absent() -> None:
    params = parse_launch(f"iss={ISS}&launch=a&foo=1&foo=2&departmentId=NONE")
    assert params.department_id is None


def test_authorization_response() -> None:
    ok = parse_authorization_response("code=c+1&state=s1")
    assert ok.code == "c+1" and ok.state == "s1" and ok.error is None
    failed = parse_authorization_response("error=access_denied&state=s1&error_description=no+way")
    assert failed.error == "access_denied" and failed.error_description == "no way"
    with pytest.raises(InvalidLaunch):
        parse_authorization_response("code=c")
    with pytest.raises(InvalidLaunch):
        parse_authorization_response("state=s")
    with pytest.raises(InvalidLaunch):
        parse_authorization_response("code=a&code=b&state=s")


def test_launch_token_is_not_in_repr() -> None:
    assert "secret-launch" not in repr(parse_launch(f"iss={ISS}&launch=secret-launch"))
