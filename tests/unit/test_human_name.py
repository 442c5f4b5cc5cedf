"""Display names from FHIR HumanName: which name is shown, and nothing unsafe from the EHR gets through."""

from __future__ import annotations

from shared.ehr.human_name import MAX_NAME, display_name


def test_text_wins_over_parts_and_usual_over_official() -> None:
    resource = {
        "name": [
            {"use": "official", "family": "Lee", "given": ["Morgan", "A."], "prefix": ["Dr."]},
            {"use": "usual", "text": "Dr. Morgan Lee"},
        ]
    }
    assert display_name(resource) == "Dr. Morgan Lee"
    assert display_name({"name": [resource["name"][0]]}) == "Dr. Morgan A. Lee"


def test_old_maiden_anonymous_and_ended_names_are_not_shown() -> None:
    resource = {
        "name": [
            {"use": "old", "text": "Old Name"},
            {"use": "maiden", "family": "Maiden"},
            {"use": "anonymous", "text": "Anon"},
            {"use": "official", "text": "Ended Name", "period": {"end": "2020-01-01"}},
        ]
    }
    assert display_name(resource) is None
    assert display_name({**resource, "name": [*resource["name"], {"family": "Kim", "given": ["Robin"]}]}) == "Robin Kim"


def test_missing_or_malformed_names_give_none() -> None:
    assert display_name({}) is None
    assert display_name({"name": "Dr. Lee"}) is None
    assert display_name({"name": [{"use": "usual", "text": "   "}, {"given": [1, None]}]}) is None


def test_control_characters_are_dropped_and_the_length_capped() -> None:
    assert display_name({"name": [{"text": "Dr.\u0000 Morgan\n\tLee\u202e"}]}) == "Dr. Morgan Lee"
    long = display_name({"name": [{"text": "x" * 1000}]})
    assert long is not None and len(long) == MAX_NAME
