"""Group visits: one Teams meeting per conference id, each participant keeping a visit of their own.

Epic's group-visit integration records carry ``conferenceId=%CONFERENCEID%`` beside ``sessionId=%CSN%``. A
launch's conference id counts only once the EHR has confirmed it (``shared.ehr.launch_context``); then:

* the participant's own visit row stays keyed by their own CSN (appointment, encounter), so its context, its
  launch events and their writeback are theirs alone, exactly as for a single visit;
* a group row, keyed by HMAC(configuration id, ``conference:<id>``), holds the one meeting (created under the
  first organizer, whose externalId is derived from the conference id), its Teams subscription and the Teams
  roster; each participant's row copies the group's meeting and names the group's row (``Visit.group_key``).

Teams reports anonymous joiners without anything that tells one patient from another, so the group row's
roster facts feed the panel and are written back for nobody; each participant's connect is written from their
own launch, for their own CSN.
"""

from __future__ import annotations

from shared.kernel.identifiers import keyed_id
from shared.kernel.settings import Geography
from shared.visits.model import Visit, VisitContext, with_group, with_group_meeting
from shared.visits.repository import VisitRepository


class GroupVisits:
    def __init__(self, visits: VisitRepository, connector_secret: str) -> None:
        self._visits = visits
        self._secret = connector_secret

    def key(self, configuration_id: str, group_key: str) -> str:
        """The group row's key: never a participant's (their keys are derived from ``csn:``/``appointment:``)."""
        return keyed_id(self._secret, "visit", configuration_id, group_key)

    def row(self, geography: Geography, configuration_id: str, group_key: str) -> Visit:
        """The group's row, created on the first launch of the conference id (it keeps no EHR context)."""
        key = self.key(configuration_id, group_key)
        group = self._visits.get_or_create(geography, key, configuration_id, VisitContext())
        return self._visits.update(group, with_group(key))

    def find(self, visit: Visit) -> Visit | None:
        """A participant's group row, if it is still there."""
        if not visit.in_group or visit.group_key is None:
            return None
        return self._visits.get(visit.geography, visit.group_key)

    def join(self, visit: Visit, group: Visit) -> Visit:
        """The participant's visit in the group: the group's meeting once it has one, else just its mark."""
        change = with_group_meeting(group) if group.has_meeting else with_group(group.key)
        return self._visits.update(visit, change)
