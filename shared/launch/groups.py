"""Group visits: one Teams meeting per conference id, each participant keeping a visit of their own.

Epic's group-visit integration records carry ``conferenceId=%CONFERENCEID%`` beside ``sessionId=%CSN%``. A
launch's conference id counts only once the EHR has confirmed it (``shared.ehr.launch_context``); then:

* the participant's own visit row stays keyed by their own CSN (appointment, encounter), so its context, its
  launch events and their writeback are theirs alone, exactly as for a single visit;
* a group row, keyed by HMAC(configuration id, ``conference:<id>``), holds the one meeting (created under the
  first organizer, whose externalId is derived from the conference id), its Teams subscription and the Teams
  roster; each participant's row copies the group's meeting and names the group's row (``Visit.group_key``).

The group row's Teams roster feeds the panel. A participant's own Teams facts are written for their own CSN
once the call leg is tied to their visit (``shared.visits.members``): a patient by the visit number their join
page gives them, a clinician by the Microsoft 365 account their launch was mapped to. A call leg tied to nobody
is written for nobody.
"""

from __future__ import annotations

from shared.kernel.errors import ConnectorError
from shared.kernel.identifiers import keyed_id
from shared.kernel.settings import Geography
from shared.visits.events import label_hint
from shared.visits.members import GroupMembers
from shared.visits.model import Visit, VisitContext, with_group, with_group_meeting, with_member
from shared.visits.repository import VisitRepository

LABEL_ATTEMPTS = 64  # a clash takes the next candidate; 64 clashes in a row would take a group of thousands


class GroupVisits:
    def __init__(self, visits: VisitRepository, connector_secret: str) -> None:
        self._visits = visits
        self._secret = connector_secret
        self._members = GroupMembers(connector_secret)

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

    def patient_label(self, group: Visit, member_key: str) -> str:
        """The visit number a patient types in their Teams name: the same on every launch, unique in the group."""
        for attempt in range(LABEL_ATTEMPTS):
            label = self._members.label(group.key, member_key, attempt)
            slot = self._members.slot(group.key, label_hint(label))
            if slot not in group.members:
                group = self._visits.update(group, with_member(slot, member_key))  # another launch may win it
            if group.members.get(slot) == member_key:
                return label
        raise ConnectorError("no free visit number in this group")  # unreachable for groups of realistic size

    def tie_clinician(self, group: Visit, member_key: str, hint: str) -> None:
        """Tie a clinician's Microsoft 365 account (``user_hint``) to the visit they launched (their first wins)."""
        self._members.tie(self._visits, group, member_key, hint)
