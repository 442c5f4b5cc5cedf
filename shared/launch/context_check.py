"""Confirming a launch's context with the EHR: the reads behind ``shared.ehr.launch_context.confirmed_context``.

The launch URL's CSN (``sessionId``) is confirmed against the CSN identifiers of the Encounter and
Appointment the token response named, read with the launch's own access token; its
``departmentId`` against the identifiers of the department (Location) the EHR named. Identifiers
of a resource never change, so they are remembered per FHIR base and resource for a while: warm
launches make no read. The references come from the token response, never from the browser.

Each launch reads a resource at most once (``LaunchReads``), and the primary-performer rule of
the launch service uses the same reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from shared.ehr.launch_context import (
    AssertedContext,
    LaunchContext,
    LaunchContextMismatch,
    UnverifiableLaunchContext,
    confirmed_context,
    csn_identifiers,
    identifier_values,
)
from shared.ehr.smart import SmartClient, SmartConfiguration
from shared.kernel.errors import UpstreamRejected
from shared.kernel.identifiers import log_id
from shared.kernel.memo import Memo

logger = logging.getLogger(__name__)

IDENTIFIER_MEMORY_SECONDS = 600.0


class LaunchReads:
    """One launch's FHIR reads with its own access token; each resource read once, refusals as None."""

    def __init__(self, ehr: SmartClient, smart: SmartConfiguration, *, access_token: str, client_id: str) -> None:
        self._ehr = ehr
        self._smart = smart
        self._access_token = access_token
        self._client_id = client_id
        self._read: dict[str, Mapping[str, Any] | None] = {}

    @property
    def fhir_base_url(self) -> str:
        return self._smart.fhir_base_url

    def resource(self, reference: str) -> Mapping[str, Any] | None:
        """The resource, or None when the EHR refuses it (scope, not found); unavailable EHRs raise."""
        if reference not in self._read:
            try:
                found: Any = self._ehr.read(self._smart, reference, access_token=self._access_token)
            except UpstreamRejected as exc:
                logger.info("Launch read of %s refused: %s", reference.split("/", 1)[0], exc.code)
                found = None
            self._read[reference] = found if isinstance(found, Mapping) else None
        return self._read[reference]


class ContextCheck:
    """Confirms each launch's URL context tokens against the EHR (one per process, with its memory)."""

    def __init__(self) -> None:
        self._identifiers: Memo[tuple[str, str, str], frozenset[str]] = Memo(IDENTIFIER_MEMORY_SECONDS)

    def confirm(
        self,
        asserted: AssertedContext,
        reads: LaunchReads,
        *,
        session_id: str | None,
        department_id: str | None,
        configuration_id: str,
    ) -> LaunchContext:
        csns = None if asserted.csn else self._csns(asserted, reads)
        department_ids = self._department_ids(asserted, reads) if department_id else None
        try:
            return confirmed_context(
                asserted,
                session_id=session_id,
                department_id=department_id,
                csns=csns,
                department_ids=department_ids,
            )
        except (LaunchContextMismatch, UnverifiableLaunchContext) as exc:
            # Hashed ids only: enough to correlate with the EHR's audit trail, nothing to read back.
            logger.warning(
                "Launch refused (%s): configuration %s, user %s, URL sessionId %s, departmentId %s, "
                "EHR encounter %s, appointment %s",
                exc.code,
                log_id(configuration_id),
                log_id(asserted.user),
                log_id(session_id) if session_id else "-",
                log_id(department_id) if department_id else "-",
                log_id(asserted.encounter) if asserted.encounter else "-",
                log_id(asserted.appointment) if asserted.appointment else "-",
            )
            raise

    def _csns(self, asserted: AssertedContext, reads: LaunchReads) -> frozenset[str] | None:
        """CSN identifiers of the launch's Encounter, else of its Appointment; None when neither could be read.

        The CSN is the encounter's own identifier: the Appointment is read only when the Encounter
        names none (or is not there to read).
        """
        found: frozenset[str] | None = None
        for reference in asserted.references:
            csns = self._remembered(reads, "csn", reference, csn_identifiers)
            if csns is not None:
                found = (found or frozenset()) | csns
            if found:
                break
        return found

    def _department_ids(self, asserted: AssertedContext, reads: LaunchReads) -> frozenset[str] | None:
        """Identifiers of the department the EHR named (token ``location``, else the Encounter's first)."""
        location = asserted.location
        if location is None and asserted.encounter:
            encounter = reads.resource(f"Encounter/{asserted.encounter}")
            location = _first_location(encounter) if encounter is not None else None
        if location is None:
            return None
        return self._remembered(reads, "ids", f"Location/{location}", identifier_values)

    def _remembered(
        self,
        reads: LaunchReads,
        what: str,
        reference: str,
        extract: Callable[[Mapping[str, Any]], frozenset[str]],
    ) -> frozenset[str] | None:
        key = (reads.fhir_base_url, what, reference)
        known = self._identifiers.get(key)
        if known is not None:
            return known
        resource = reads.resource(reference)
        if resource is None:
            return None
        values = extract(resource)
        self._identifiers.put(key, values)
        return values


def _first_location(encounter: Mapping[str, Any]) -> str | None:
    for entry in encounter.get("location") or ():
        location = entry.get("location") if isinstance(entry, Mapping) else None
        reference = location.get("reference") if isinstance(location, Mapping) else None
        if isinstance(reference, str) and reference.startswith("Location/"):
            return reference.removeprefix("Location/") or None
    return None
