"""FHIR search over the seeded and created resources: the parameters Epic's R4 read APIs offer for our types."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

Matcher = Callable[[dict[str, Any], str], bool]


class SearchError(ValueError):
    """A search parameter value the server cannot understand (400)."""


def reference_id(value: str) -> str:
    """``Patient/123``, ``https://…/Patient/123`` or ``123`` → ``123``."""
    return value.rstrip("/").rsplit("/", 1)[-1]


def _refs(resource: dict[str, Any], *paths: tuple[str, ...]) -> list[str]:
    found: list[str] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, path)
            return
        if not isinstance(node, dict):
            return
        if not path:
            ref = node.get("reference")
            if isinstance(ref, str):
                found.append(ref)
            return
        walk(node.get(path[0]), path[1:])

    for path in paths:
        walk(resource, path)
    return found


def _ref_matcher(*paths: tuple[str, ...], resource_type: str | None = None) -> Matcher:
    def match(resource: dict[str, Any], value: str) -> bool:
        wanted = reference_id(value)
        for ref in _refs(resource, *paths):
            kind, _, ident = ref.rpartition("/")
            if ident == wanted and (resource_type is None or kind.endswith(resource_type)):
                return True
        return False

    return match


def _identifier_matcher(*paths: tuple[str, ...]) -> Matcher:
    def match(resource: dict[str, Any], value: str) -> bool:
        system, sep, code = value.rpartition("|")
        identifiers: list[dict[str, Any]] = []

        def walk(node: Any, path: tuple[str, ...]) -> None:
            if isinstance(node, list):
                for item in node:
                    walk(item, path)
            elif isinstance(node, dict):
                if not path:
                    identifiers.append(node)
                else:
                    walk(node.get(path[0]), path[1:])

        for path in paths:
            walk(resource, path)
        for identifier in identifiers:
            if identifier.get("value") != code:
                continue
            if not sep or identifier.get("system", "") == system:
                return True
        return False

    return match


def _string_matcher(getter: Callable[[dict[str, Any]], list[str]]) -> Matcher:
    def match(resource: dict[str, Any], value: str) -> bool:
        return any(s.lower().startswith(value.lower()) for s in getter(resource))

    return match


def _names(resource: dict[str, Any], part: str) -> list[str]:
    values: list[str] = []
    for name in resource.get("name") or []:
        if part in ("family", "name") and name.get("family"):
            values.append(name["family"])
        if part in ("given", "name"):
            values.extend(name.get("given") or [])
        if part == "name" and name.get("text"):
            values.append(name["text"])
    return values


def _token_matcher(getter: Callable[[dict[str, Any]], list[str]]) -> Matcher:
    def match(resource: dict[str, Any], value: str) -> bool:
        return value.rpartition("|")[2] in getter(resource)

    return match


def _parse_instant(text: str) -> tuple[dt.datetime, dt.datetime]:
    """The range a date/dateTime value covers (a day, or one instant)."""
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
            return start, start + dt.timedelta(days=1)
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SearchError(f"not a FHIR date: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment, moment


def _date_matcher(getter: Callable[[dict[str, Any]], tuple[str | None, str | None]]) -> Matcher:
    def match(resource: dict[str, Any], value: str) -> bool:
        prefix = value[:2] if value[:2] in ("eq", "ne", "gt", "lt", "ge", "le") else "eq"
        text = value[2:] if value[:2] == prefix else value
        search_start, search_end = _parse_instant(text)
        start_text, end_text = getter(resource)
        if not start_text:
            return False
        target_start = _parse_instant(start_text)[0]
        target_end = _parse_instant(end_text)[1] if end_text else _parse_instant(start_text)[1]
        if prefix == "eq":
            return search_start <= target_start and target_end <= search_end
        if prefix == "ne":
            return not (search_start <= target_start and target_end <= search_end)
        if prefix == "ge":
            return target_end >= search_start
        if prefix == "gt":
            return target_end > search_end
        if prefix == "le":
            return target_start <= search_end
        return target_start < search_start  # lt

    return match


def _period(resource: dict[str, Any]) -> tuple[str | None, str | None]:
    period = resource.get("period") or {}
    return period.get("start"), period.get("end")


def _codings(*keys: str) -> Callable[[dict[str, Any]], list[str]]:
    def get(resource: dict[str, Any]) -> list[str]:
        codes: list[str] = []
        for key in keys:
            node = resource.get(key)
            for item in node if isinstance(node, list) else [node]:
                if isinstance(item, dict):
                    if "code" in item:
                        codes.append(str(item["code"]))
                    codes.extend(str(c.get("code")) for c in item.get("coding") or [])
        return codes

    return get


_ID: Matcher = lambda resource, value: resource.get("id") == value  # noqa: E731


def _tag(resource: dict[str, Any], value: str) -> bool:
    """``_tag`` (a standard search parameter on every resource): ``[system|]code`` against ``meta.tag``."""
    system, sep, code = value.rpartition("|")
    for tag in (resource.get("meta") or {}).get("tag") or []:
        if isinstance(tag, dict) and tag.get("code") == code and (not sep or tag.get("system", "") == system):
            return True
    return False


_IDENTIFIER = _identifier_matcher(("identifier",))

MATCHERS: dict[str, dict[str, Matcher]] = {
    "Patient": {
        "_id": _ID,
        "identifier": _IDENTIFIER,
        "family": _string_matcher(lambda r: _names(r, "family")),
        "given": _string_matcher(lambda r: _names(r, "given")),
        "name": _string_matcher(lambda r: _names(r, "name")),
        "birthdate": lambda r, v: r.get("birthDate") == v,
        "gender": lambda r, v: r.get("gender") == v,
    },
    "Practitioner": {
        "_id": _ID,
        "identifier": _IDENTIFIER,
        "family": _string_matcher(lambda r: _names(r, "family")),
        "given": _string_matcher(lambda r: _names(r, "given")),
        "name": _string_matcher(lambda r: _names(r, "name")),
    },
    "Location": {
        "_id": _ID,
        "identifier": _IDENTIFIER,
        "name": _string_matcher(lambda r: [r.get("name", "")]),
    },
    "Appointment": {
        "_id": _ID,
        "identifier": _IDENTIFIER,
        "patient": _ref_matcher(("participant", "actor"), resource_type="Patient"),
        "practitioner": _ref_matcher(("participant", "actor"), resource_type="Practitioner"),
        "location": _ref_matcher(("participant", "actor"), resource_type="Location"),
        "actor": _ref_matcher(("participant", "actor")),
        "date": _date_matcher(lambda r: (r.get("start"), r.get("end"))),
        "status": lambda r, v: r.get("status") == v,
    },
    "Encounter": {
        "_id": _ID,
        "identifier": _IDENTIFIER,
        "patient": _ref_matcher(("subject",), resource_type="Patient"),
        "subject": _ref_matcher(("subject",)),
        "practitioner": _ref_matcher(("participant", "individual"), resource_type="Practitioner"),
        "participant": _ref_matcher(("participant", "individual")),
        "appointment": _ref_matcher(("appointment",)),
        "location": _ref_matcher(("location", "location")),
        "date": _date_matcher(_period),
        "status": lambda r, v: r.get("status") == v,
        "class": _token_matcher(lambda r: [str((r.get("class") or {}).get("code"))]),
    },
    "AuditEvent": {
        "_id": _ID,
        # R4 AuditEvent has no identifier element: ``identifier`` (and ``entity-identifier``) match
        # ``entity.what.identifier``, which is where an idempotent writer puts its event id.
        "identifier": _identifier_matcher(("entity", "what", "identifier")),
        "entity-identifier": _identifier_matcher(("entity", "what", "identifier")),
        "entity": _ref_matcher(("entity", "what")),
        "patient": _ref_matcher(("entity", "what"), ("agent", "who"), resource_type="Patient"),
        "agent": _ref_matcher(("agent", "who")),
        "date": _date_matcher(lambda r: (r.get("recorded"), None)),
        "type": _token_matcher(_codings("type")),
        "subtype": _token_matcher(_codings("subtype")),
        "action": lambda r, v: r.get("action") == v,
        "outcome": lambda r, v: r.get("outcome") == v,
    },
}
for _matchers in MATCHERS.values():
    _matchers["_tag"] = _tag

IGNORED = frozenset({"_count", "_format", "_summary", "_elements", "_sort", "_include", "_revinclude"})


def search(resources: list[dict[str, Any]], resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Resources matching every parameter (AND); comma-separated values are alternatives (OR)."""
    matchers = MATCHERS.get(resource_type, {})
    criteria: list[tuple[Matcher, list[str]]] = []
    for name, value in params:
        if name in IGNORED:
            continue
        matcher = matchers.get(name)
        if matcher is None:
            raise SearchError(f"unsupported search parameter for {resource_type}: {name}")
        alternatives = [v for v in value.split(",") if v]
        if not alternatives:
            raise SearchError(f"empty value for search parameter {name}")
        criteria.append((matcher, alternatives))
    return [r for r in resources if all(any(m(r, v) for v in values) for m, values in criteria)]
