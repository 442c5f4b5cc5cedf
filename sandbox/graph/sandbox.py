"""The Graph stand-in's state and its in-process API: meetings, subscriptions, deliveries.

``GraphSandbox(config)`` owns everything; ``.app`` is its Starlette app. Tests drive calls without a
browser through ``join_user`` / ``join_anonymous`` / ``admit`` / ``leave`` / ``end`` and read what
webhooks received through ``deliveries()`` and ``wait_for_deliveries()``.
"""

from __future__ import annotations

from sandbox.graph.config import GraphConfig
from sandbox.graph.delivery import Deliverer, Delivery
from sandbox.graph.meetings import CallEvent, Meeting, Meetings, Participant, utcnow
from sandbox.graph.notifications import change_notification, lifecycle_notification
from sandbox.graph.subscriptions import Subscription, Subscriptions
from sandbox.graph.tokens import TokenVerifier


class GraphSandbox:
    def __init__(self, config: GraphConfig) -> None:
        self.config = config
        self.tokens = TokenVerifier(config)
        self.subscriptions = Subscriptions()
        self.deliverer = Deliverer(
            timeout=config.delivery_timeout,
            retry_delays=config.delivery_retry_delays,
            delay=config.notification_delay,
        )
        self.meetings = Meetings(config.root, config.directory, self._on_event)
        from sandbox.graph.app import build_app  # the app needs this object; avoid an import cycle

        self.app = build_app(self)

    # -- notifications -----------------------------------------------------------------------
    def _on_event(self, event: CallEvent) -> None:
        for subscription in self.subscriptions.for_meeting(event.meeting.id):
            body = change_notification(
                subscription, event, self.config.sign_validation_token, self.config.validation_token_lifetime
            )
            self.deliverer.submit(
                "notification", subscription.id, subscription.notification_url, body, event.at, event.event_type
            )

    def send_lifecycle_notification(
        self, subscription_id: str, lifecycle_event: str = "reauthorizationRequired"
    ) -> Delivery:
        """Post a lifecycle notification (e.g. ``reauthorizationRequired``) to the subscription's lifecycle URL."""
        subscription = self.subscriptions.get(subscription_id)
        if subscription is None or subscription.lifecycle_notification_url is None:
            raise LookupError("no live subscription with a lifecycleNotificationUrl")
        return self.deliverer.submit(
            "lifecycle",
            subscription.id,
            subscription.lifecycle_notification_url,
            lifecycle_notification(subscription, lifecycle_event),
            utcnow(),
            lifecycle_event,
        )

    def deliveries(self) -> list[Delivery]:
        return self.deliverer.deliveries()

    def wait_for_deliveries(self, timeout: float = 10.0) -> bool:
        return self.deliverer.wait_idle(timeout)

    def close(self) -> None:
        self.deliverer.close()

    # -- meetings and calls --------------------------------------------------------------------
    def meeting(self, meeting_id: str) -> Meeting | None:
        return self.meetings.get(meeting_id)

    def meeting_by_join_web_url(self, join_web_url: str) -> Meeting | None:
        return self.meetings.by_join_web_url(join_web_url)

    def subscription(self, subscription_id: str) -> Subscription | None:
        return self.subscriptions.get(subscription_id)

    def join_user(self, meeting_id: str, user_id: str) -> Participant:
        return self.meetings.join(meeting_id, user_id=user_id)

    def join_anonymous(self, meeting_id: str, display_name: str) -> Participant:
        return self.meetings.join(meeting_id, display_name=display_name)

    def admit(self, meeting_id: str, participant_id: str) -> Participant:
        return self.meetings.admit(meeting_id, participant_id)

    def leave(self, meeting_id: str, participant_id: str) -> None:
        self.meetings.leave(meeting_id, participant_id)

    def end(self, meeting_id: str) -> None:
        self.meetings.end(meeting_id)
