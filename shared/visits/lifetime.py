"""How long a visit keeps its launch context: until its meeting has ended and its writebacks are done.

The context (CSN, appointment, encounter, Patient/…, Practitioner/…, sealed on the row) exists only so the
writeback worker can name the visit and its participants to the EHR. Once everyone seen in the meeting has
left (Graph's ``callEnded`` disconnects everyone listed; otherwise each ``removedState``) and no writeback of
the visit is still in flight, nothing needs it: the worker folds ``release_when_done`` into the presence write of
each event it completes, so the context goes at once — in the write that stores the meeting's end, or, when an
event of the visit was still pending then, in a later event's write or the upkeep timer's scan — not with the
row, 24 hours later (a group visit's participant: right after the write, the group's row saying whether its
meeting has ended). The row itself (meeting, presence, subscription: no EHR identifier) stays until it expires.

A later launch of the same appointment brings its own sealed context and restores it (``with_launch_context``).
A Graph event that still needs the context after it was released (someone rejoined through the Teams link
without launching again) is retried by the queue, then poisoned, and can be replayed after a launch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from shared.kernel.identifiers import log_id
from shared.visits.events import EventKind
from shared.visits.model import Visit, has_context, without_context
from shared.visits.repository import VisitRepository

logger = logging.getLogger(__name__)


def meeting_ended(visit: Visit) -> bool:
    """Everyone seen in the meeting has disconnected (no one seen: not ended, it has not begun).

    A group meeting's row tells its participants apart (``attendees``): per role, one patient's leaving would
    look like all patients' leaving. A single visit's per-role presence says it, and its further clinicians and
    guest interpreter (also ``attendees``) must have left too.
    """
    attendees_left = all(a.entry.state is EventKind.DISCONNECTED for a in visit.attendees.values())
    if visit.is_group:
        return bool(visit.attendees) and attendees_left
    roles_left = bool(visit.presence) and all(p.state is EventKind.DISCONNECTED for p in visit.presence.values())
    return roles_left and attendees_left


def release_when_done(
    pending: Callable[[Visit], bool], *, ended: bool | None = None
) -> Callable[[Visit], Visit | None]:
    """The change that removes a visit's launch context when its meeting has ended and nothing is pending for it
    (None: it stays). Composed after an event's presence change, it releases the context in the event's own write:
    the event that ends the meeting costs one write, not two.

    ``pending`` says whether a writeback of the visit is still in flight: the worker reads its ledger rows
    (``shared.writeback.ledger``), asked only once the meeting has ended and while the row keeps a context.
    ``ended``: whether the meeting has ended, when another row knows (a group visit's participant: the group's
    row holds the Teams facts); None: the row's own presence says.
    """
    release = without_context()

    def change(current: Visit) -> Visit | None:
        if not (has_context(current) or current.unreadable_context):
            return None
        if ended is None and current.in_group:
            return None  # joined a group meanwhile (a row re-read after a conflict): the group's row says, not this
        if not (meeting_ended(current) if ended is None else ended) or pending(current):
            return None
        return release(current)

    return change


def release_context_when_done(
    visits: VisitRepository,
    visit: Visit,
    *,
    pending: Callable[[Visit], bool],
    ended: bool | None = None,
) -> Visit:
    """Remove the visit's launch context when its meeting has ended and nothing is pending for it
    (``release_when_done``), in a write of its own.

    The removal is etag-guarded, and re-checks both conditions on a row re-read after a conflict, so an event
    that arrives meanwhile (someone rejoins, a launch restores the context) wins.
    """
    release = release_when_done(pending, ended=ended)
    if release(visit) is None:
        return visit

    def change(current: Visit) -> Visit | None:
        # The row just checked (the update's first try): asking the ledger again a moment later tells nothing
        # new. A row re-read after a conflict is checked again.
        return without_context()(current) if current is visit else release(current)

    released = visits.update(visit, change)
    log_release(visit, released)
    return released


def log_release(before: Visit, after: Visit) -> None:
    if (has_context(before) or before.unreadable_context) and not (has_context(after) or after.unreadable_context):
        logger.info("Released the launch context of visit %s: the meeting ended, writebacks done", log_id(after.key))
