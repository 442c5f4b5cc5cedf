"""Build ``meetingCallEvents`` change notifications and lifecycle notifications as Graph sends them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from sandbox.graph.crypto import encrypt_content
from sandbox.graph.meetings import CallEvent, graph_time
from sandbox.graph.subscriptions import Subscription

# The Microsoft Graph change-notification publisher, the ``appid`` of every validation token.
GRAPH_NOTIFICATION_PUBLISHER = "0bf30f3b-4a52-48df-9a82-234910c4a086"


def validation_token_claims(app_id: str, tenant_id: str, lifetime: int) -> dict[str, Any]:
    now = int(time.time())
    issuer = f"https://sts.windows.net/{tenant_id}/"
    return {
        "aud": app_id,
        "iss": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "appid": GRAPH_NOTIFICATION_PUBLISHER,
        "appidacr": "2",
        "idp": issuer,
        "tid": tenant_id,
        "ver": "1.0",
    }


def event_payload(subscription: Subscription, event: CallEvent, notification_id: str) -> dict[str, Any]:
    """The decrypted content: ``#microsoft.graph.callevent`` with ``participants@delta`` on roster updates."""
    payload: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.callevent",
        "@odata.id": subscription.resource,
        "id": notification_id,
        "eventType": event.event_type,
        "eventDateTime": graph_time(event.at),
    }
    if event.event_type == "rosterUpdated":
        payload["participants@delta"] = list(event.participants_delta)
    return payload


def change_notification(
    subscription: Subscription,
    event: CallEvent,
    sign_validation_token: Callable[[dict[str, Any]], str],
    token_lifetime: int,
) -> dict[str, Any]:
    """The POST body for one event and one subscription (rich when the subscription asked for it)."""
    notification_id = str(uuid.uuid4())
    payload = event_payload(subscription, event, notification_id)
    item: dict[str, Any] = {
        "subscriptionId": subscription.id,
        "clientState": subscription.client_state,
        "changeType": "updated",
        "tenantId": subscription.tenant_id,
        "resource": subscription.resource,
        "subscriptionExpirationDateTime": graph_time(subscription.expiration),
        "resourceData": {
            "@odata.id": subscription.resource,
            "@odata.type": "#microsoft.graph.callevent",
            "id": notification_id,
        },
        "organizationId": subscription.tenant_id,
    }
    if not subscription.include_resource_data or subscription.certificate is None:
        return {"value": [item]}
    assert subscription.encryption_certificate_id is not None
    item["encryptedContent"] = encrypt_content(
        payload, subscription.certificate, subscription.encryption_certificate_id
    )
    claims = validation_token_claims(subscription.app_id, subscription.tenant_id, token_lifetime)
    return {"value": [item], "validationTokens": [sign_validation_token(claims)]}


def lifecycle_notification(subscription: Subscription, lifecycle_event: str) -> dict[str, Any]:
    return {
        "value": [
            {
                "subscriptionId": subscription.id,
                "subscriptionExpirationDateTime": graph_time(subscription.expiration),
                "tenantId": subscription.tenant_id,
                "clientState": subscription.client_state,
                "lifecycleEvent": lifecycle_event,
                "resource": subscription.resource,
                "organizationId": subscription.tenant_id,
            }
        ]
    }
