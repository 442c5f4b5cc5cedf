"""Who is who in a group meeting: a Teams participant tied to their own visit (their own CSN).

A group visit has one meeting, and Teams reports an anonymous joiner by the name they typed and a random call-leg
id, nothing the EHR vouched for. So each patient's launch (which the EHR vouched for) gets a **visit number**: four
digits, random-looking, unique within the group. Their join page asks them to type it after their first name
("Maria 4821"); a roster name carrying exactly that number ties the call leg to that patient's visit, and its
connect and disconnect are written for their CSN. A clinician is tied by the Microsoft 365 account their launch was
mapped to, which Teams reports exactly.

What is kept: on the group's row, ``HMAC(secret, group, hint) -> member visit key`` (``Visit.members``), where a
hint (``shared.visits.events``: ``label_hint``, ``user_hint``, read from Teams' roster by ``label_in_name``) is
``label:<number>`` or ``user:<SHA-256 of the object id>``; never a name. The number is derived from the
member's visit key, so a relaunch shows the same number; a clash with another member's number takes the next
derivation.
"""

from __future__ import annotations

from shared.kernel.identifiers import keyed_id
from shared.visits.events import LABEL_DIGITS
from shared.visits.model import Visit, with_member
from shared.visits.repository import VisitRepository

_LABELS = 9 * 10 ** (LABEL_DIGITS - 1)  # 1000..9999: never a leading zero a patient might drop


class GroupMembers:
    """Keys of the group row's member map, and the visit numbers offered to patients."""

    def __init__(self, connector_secret: str) -> None:
        self._secret = connector_secret

    def slot(self, group_key: str, hint: str) -> str:
        return keyed_id(self._secret, "group-member", group_key, hint)

    def label(self, group_key: str, member_key: str, attempt: int) -> str:
        """The ``attempt``-th candidate number for a member (the first is theirs unless another member has it)."""
        digest = keyed_id(self._secret, "group-label", group_key, member_key, str(attempt))
        return str(10 ** (LABEL_DIGITS - 1) + int(digest, 16) % _LABELS)

    def tie(self, visits: VisitRepository, group: Visit, member_key: str, hint: str) -> None:
        """Tie a clinician's Microsoft 365 account (``user_hint``) to the visit they launched (their first wins)."""
        slot = self.slot(group.key, hint)
        if slot not in group.members:
            visits.update(group, with_member(slot, member_key))

    def member(self, members: dict[str, str], group_key: str, hint: str | None) -> str | None:
        """The member visit a hint names on a group row, if any."""
        return members.get(self.slot(group_key, hint)) if hint else None
