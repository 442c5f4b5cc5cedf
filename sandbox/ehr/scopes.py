"""SMART scopes this EHR understands, and what they allow.

Clinical scopes, SMART v1 and v2 both accepted:

* ``<context>/<Type|*>.read``  → read + search;  ``.write`` → create + update + delete;  ``.*`` → all
* ``<context>/<Type|*>.<cruds>`` (v2; any in-order subset of ``c r u d s``, e.g. ``.rs``, ``.c``, ``.cruds``)

``context`` is ``patient`` (only the launch patient's compartment), ``user`` (what the signed-in
user may see) or ``system`` (Backend Services; ``client_credentials`` only). Non-clinical scopes:
``launch``, ``launch/patient``, ``launch/encounter``, ``openid``, ``fhirUser``, ``profile``,
``online_access``. Anything else (including ``offline_access``: no refresh tokens here) is silently
dropped from the grant, like Epic.

``SetExternalConnectionStatus`` (an Epic web service, not FHIR) needs a ``system`` token allowed to
update Encounters: ``system/Encounter.write``, ``system/*.write``, ``system/Encounter.u`` … (any
scope granting ``update`` on Encounter), and the web service enabled for the client id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OPERATIONS = ("create", "read", "update", "delete", "search")
IDENTITY_SCOPES = frozenset(
    {"launch", "launch/patient", "launch/encounter", "openid", "fhirUser", "profile", "online_access"}
)
_CLINICAL = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]{1,63})\.(read|write|\*|c?r?u?d?s?)$")
_V1 = {
    "read": frozenset({"read", "search"}),
    "write": frozenset({"create", "update", "delete"}),
    "*": frozenset(OPERATIONS),
}
_V2 = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


@dataclass(frozen=True)
class ClinicalScope:
    context: str
    resource_type: str
    operations: frozenset[str]

    def grants(self, resource_type: str, operation: str) -> bool:
        return self.resource_type in ("*", resource_type) and operation in self.operations


def parse_clinical(scope: str) -> ClinicalScope | None:
    match = _CLINICAL.match(scope)
    if not match or not match.group(3):
        return None
    context, resource_type, permission = match.groups()
    operations = _V1.get(permission) or frozenset(_V2[letter] for letter in permission)
    return ClinicalScope(context, resource_type, operations)


def is_known(scope: str) -> bool:
    return scope in IDENTITY_SCOPES or parse_clinical(scope) is not None


def split(scope_string: str | None) -> list[str]:
    """Scopes in request order, deduplicated."""
    seen: dict[str, None] = {}
    for scope in (scope_string or "").split():
        seen.setdefault(scope, None)
    return list(seen)


def granting_contexts(scopes: list[str] | tuple[str, ...], resource_type: str, operation: str) -> set[str]:
    """The contexts (patient/user/system) whose scopes allow ``operation`` on ``resource_type``."""
    contexts = set()
    for scope in scopes:
        parsed = parse_clinical(scope)
        if parsed and parsed.grants(resource_type, operation):
            contexts.add(parsed.context)
    return contexts
