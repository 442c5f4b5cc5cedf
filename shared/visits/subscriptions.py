"""Graph ``meetingCallEvents`` subscriptions of visits: create, reauthorize, renew, delete.

A visit's subscription is created (app-only, in the organizer's tenant) once the visit has a
meeting: by the writeback worker when the provider's launch event arrives — so the launch path
never waits for Graph's validation handshake — and, as a safety net, by the upkeep timer.
It expires with the visit (≤ 24 h, well inside Graph's 3-day limit for these resources), so
renewal is needed only when Graph asks (``reauthorizationRequired``). The timer deletes the
subscriptions of finished visits (everyone disconnected for a while) to stay far from the
10,000-per-organization quota.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from shared.kernel.clock import utcnow
from shared.kernel.errors import ConnectorError, UpstreamRejected
from shared.kernel.identifiers import log_id
from shared.kernel.settings import Geography
from shared.microsoft.notifications import ClientStates, NotificationCertificate, SubscriptionTarget
from shared.microsoft.teams import Subscription
from shared.visits.events import EventKind
from shared.visits.model import Visit, with_subscription, without_subscription
from shared.visits.repository import VisitRepository

logger = logging.getLogger(__name__)

MAX_LIFETIME = timedelta(minutes=4230)  # meetingCallEvents: Graph documents 4,230 and 4,320; use the lower
RENEW_WITHIN = timedelta(hours=2)
FINISHED_AFTER = timedelta(minutes=10)
NOTIFICATIONS_ROUTE = "/api/graph/notifications"
LIFECYCLE_ROUTE = "/api/graph/lifecycle"


class CallEventSubscriber(Protocol):
    """What ``shared.microsoft.teams.TeamsClient`` offers for subscriptions."""

    def subscribe_call_events(
        self,
        *,
        join_web_url: str,
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
        certificate_base64: str,
        certificate_id: str,
        expires_at: datetime,
    ) -> Subscription: ...

    def find_call_events_subscription(self, *, join_web_url: str, notification_url: str) -> Subscription | None: ...

    def renew_subscription(self, subscription_id: str, expires_at: datetime) -> Subscription: ...

    def delete_subscription(self, subscription_id: str) -> None: ...


@dataclass
class Upkeep:
    created: int = 0
    renewed: int = 0
    deleted: int = 0
    failed: int = 0


class CallEventSubscriptions:
    def __init__(
        self,
        visits: VisitRepository,
        subscriber_for_tenant: Callable[[str], CallEventSubscriber],
        client_states: ClientStates,
        certificate: NotificationCertificate,
        public_base_url: str,
    ) -> None:
        self._visits = visits
        self._subscriber = subscriber_for_tenant
        self._client_states = client_states
        self._certificate = certificate
        self._base = public_base_url.rstrip("/")

    def ensure(self, visit: Visit, *, now: datetime | None = None) -> Visit:
        """Subscribe to the visit's meeting unless it already has a live subscription.

        A participant's visit within a group visit subscribes its group's row, which owns the shared meeting.
        """
        now = now or utcnow()
        if visit.in_group and visit.group_key is not None:
            group = self._visits.get(visit.geography, visit.group_key)
            if group is not None:
                self.ensure(group, now=now)
            return visit
        if not visit.has_meeting or not visit.organizer_tenant_id or not visit.organizer_object_id:
            return visit
        if visit.subscription_id and visit.subscription_expires_at and visit.subscription_expires_at > now:
            return visit
        subscriber = self._subscriber(visit.organizer_tenant_id)
        try:
            return self._subscribe(visit, subscriber, now)
        except UpstreamRejected as exc:
            if exc.code != "graph_subscription_exists":
                raise
            return self._adopt(visit, subscriber, now, exc)

    def _subscribe(self, visit: Visit, subscriber: CallEventSubscriber, now: datetime) -> Visit:
        assert visit.join_web_url and visit.organizer_object_id
        target = SubscriptionTarget(visit.geography, visit.key, visit.organizer_object_id, visit.configuration_id)
        subscription = subscriber.subscribe_call_events(
            join_web_url=visit.join_web_url,
            notification_url=self._base + NOTIFICATIONS_ROUTE,
            lifecycle_url=self._base + LIFECYCLE_ROUTE,
            client_state=self._client_states.issue(target),
            certificate_base64=self._certificate.certificate_base64,
            certificate_id=self._certificate.certificate_id,
            expires_at=_expiry(visit, now),
        )
        logger.info("Subscribed to call events of visit %s", log_id(visit.key))
        return self._visits.update(visit, with_subscription(subscription.id, subscription.expires_at))

    def _adopt(self, visit: Visit, subscriber: CallEventSubscriber, now: datetime, refused: UpstreamRejected) -> Visit:
        """Graph already has this meeting's subscription: another worker's (recorded or about to be),
        or one whose recording was lost to a crash. Record it rather than fail forever.

        Its clientState is ours: it is derived from the visit, which never changes organizer. One
        encrypted for a certificate we no longer hold is replaced.
        """
        current = self._visits.get(visit.geography, visit.key) or visit
        if current.subscription_id and current.subscription_expires_at and current.subscription_expires_at > now:
            return current
        assert visit.join_web_url is not None
        found = subscriber.find_call_events_subscription(
            join_web_url=visit.join_web_url, notification_url=self._base + NOTIFICATIONS_ROUTE
        )
        if found is None:
            # Being created by a concurrent request, or another deployment of this app registration holds
            # the meeting (Graph allows one subscription per resource and app): the upkeep timer looks again.
            raise refused
        if found.certificate_id is not None and found.certificate_id != self._certificate.certificate_id:
            logger.info("Replacing the call-events subscription of visit %s (old certificate)", log_id(visit.key))
            subscriber.delete_subscription(found.id)
            return self._subscribe(current, subscriber, now)
        logger.info("Recorded the existing call-events subscription of visit %s", log_id(visit.key))
        return self._visits.update(current, with_subscription(found.id, found.expires_at))

    def reauthorize(self, target: SubscriptionTarget, subscription_id: str) -> None:
        """Answer ``reauthorizationRequired``: renew (PATCH expirationDateTime) the subscription."""
        visit = self._visits.get(target.geography, target.visit_key)
        if visit is None or visit.subscription_id != subscription_id or not visit.organizer_tenant_id:
            logger.info("Lifecycle event for a subscription no visit owns (%s)", log_id(subscription_id))
            return
        self._renew(visit, utcnow())

    def upkeep(
        self, geography: Geography, *, now: datetime | None = None, also: Callable[[Visit], object] | None = None
    ) -> Upkeep:
        """Create missing subscriptions, renew those near expiry, delete those of finished visits.

        ``also`` is called for every live visit in the same scan (the writeback worker's release of a finished
        visit's launch context), so the timer reads each visit row once.
        """
        now = now or utcnow()
        result = Upkeep()
        for visit in self._visits.live(geography):
            try:
                if also is not None:
                    also(visit)
                if visit.subscription_id and _finished(visit, now):
                    self._delete(visit)
                    result.deleted += 1
                elif (
                    visit.subscription_id
                    and visit.subscription_expires_at
                    and (
                        visit.subscription_expires_at - now < RENEW_WITHIN
                        and visit.expires_at > visit.subscription_expires_at
                    )
                ):
                    self._renew(visit, now)
                    result.renewed += 1
                elif (
                    not visit.subscription_id and visit.has_meeting and not visit.in_group and not _finished(visit, now)
                ):
                    self.ensure(visit, now=now)
                    result.created += 1
            except ConnectorError as exc:
                logger.warning("Subscription upkeep for visit %s failed: %s", log_id(visit.key), exc.code)
                result.failed += 1
        return result

    def _renew(self, visit: Visit, now: datetime) -> None:
        assert visit.subscription_id is not None and visit.organizer_tenant_id is not None
        try:
            renewed = self._subscriber(visit.organizer_tenant_id).renew_subscription(
                visit.subscription_id, _expiry(visit, now)
            )
        except UpstreamRejected as exc:
            if exc.code != "graph_not_found":
                raise
            # Graph removed it: forget it, and subscribe again while the visit lasts.
            visit = self._visits.update(visit, without_subscription(visit.subscription_id))
            self.ensure(visit, now=now)
            return
        self._visits.update(visit, with_subscription(renewed.id, renewed.expires_at))

    def _delete(self, visit: Visit) -> None:
        assert visit.subscription_id is not None and visit.organizer_tenant_id is not None
        self._subscriber(visit.organizer_tenant_id).delete_subscription(visit.subscription_id)
        self._visits.update(visit, without_subscription(visit.subscription_id))
        logger.info("Deleted the call-events subscription of finished visit %s", log_id(visit.key))


def _expiry(visit: Visit, now: datetime) -> datetime:
    return min(visit.expires_at, now + MAX_LIFETIME)


def _finished(visit: Visit, now: datetime) -> bool:
    """Everyone seen has disconnected, the last of them at least ``FINISHED_AFTER`` ago."""
    # A group meeting: each participant, not each role; a single visit: each role, and each further clinician or
    # guest interpreter it tells apart.
    facts = [(a.entry.state, a.entry.at) for a in visit.attendees.values()]
    if not visit.is_group:
        if not visit.presence:
            return False
        facts += [(p.state, p.at) for p in visit.presence.values()]
    if not facts:
        return False
    return all(state is EventKind.DISCONNECTED for state, _ in facts) and max(at for _, at in facts) < now - (
        FINISHED_AFTER
    )
