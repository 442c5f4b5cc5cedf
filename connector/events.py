"""Connect/disconnect events: the Graph webhook, the writeback queue worker, subscription upkeep.

    Graph ──POST /api/graph/notifications──▶ validate (clientState, validationTokens), decrypt,
                                             map ──queue output──▶ %WRITEBACK_QUEUE_NAME% ──▶ 202
    Graph ──POST /api/graph/lifecycle──────▶ reauthorizationRequired ──▶ renew (≤ 2.5 s) ──▶ 202
    %WRITEBACK_QUEUE_NAME% ──trigger──▶ presence + EHR writeback, at least once (shared.writeback.worker);
                                        a launch event also subscribes the visit's meeting
    timer (every 15 min) ──▶ create missing / renew / delete finished subscriptions; release finished contexts

The notification webhook makes no storage, EHR or Graph call: Graph's budget is 3 seconds per delivery.
"""

from __future__ import annotations

import logging

import azure.functions as func

from connector.services import services
from connector.web import ECHO_HEADERS, api
from shared.kernel.errors import ConnectorError
from shared.kernel.identifiers import log_id
from shared.microsoft.notifications import SubscriptionTarget, parse_body
from shared.microsoft.teams import graph_deadline

bp = func.Blueprint()
logger = logging.getLogger(__name__)

QUEUE = "%WRITEBACK_QUEUE_NAME%"
LIFECYCLE_BUDGET = 2.5  # seconds; Graph allows 3 per delivery
CONNECTION = "AzureWebJobsStorage"


# --- Graph webhook ----------------------------------------------------------------------------


def _handshake(req: func.HttpRequest) -> func.HttpResponse | None:
    """Subscription validation: echo the (URL-decoded) token as text/plain, 200, at once.

    The body is whatever the query said, so it goes out as inert text: ``nosniff`` (no browser may
    read it as HTML or script) and a ``default-src 'none'`` policy (nothing in it may load or run).
    """
    token = req.params.get("validationToken")
    if token is None:
        return None
    return func.HttpResponse(token, status_code=200, mimetype="text/plain", charset="utf-8", headers=ECHO_HEADERS)


@bp.route(route="graph/notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.queue_output(arg_name="events", queue_name=QUEUE, connection=CONNECTION)
@api
def graph_notifications(req: func.HttpRequest, events: func.Out[list[str]]) -> func.HttpResponse:
    handshake = _handshake(req)
    if handshake is not None:
        return handshake
    decoded = services().decoder.change_notifications(parse_body(req.get_body()))
    events.set([event.to_json() for event in decoded.events])
    if decoded.events:
        logger.info("Queued %d visit event(s) from Graph (%d item(s) dropped)", len(decoded.events), decoded.dropped)
    return func.HttpResponse(status_code=202)


@bp.route(route="graph/lifecycle", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def graph_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    """Lifecycle notifications: ``reauthorizationRequired`` renews the subscription within the budget.

    Graph keeps sending ``reauthorizationRequired`` until the subscription is renewed, so a renewal
    that does not finish within ``LIFECYCLE_BUDGET`` is simply tried again on the next one.
    """
    handshake = _handshake(req)
    if handshake is not None:
        return handshake
    decoded = services().decoder.lifecycle_notifications(parse_body(req.get_body()))
    if decoded.reauthorize:
        _reauthorize_all(decoded.reauthorize)
    return func.HttpResponse(status_code=202)


def _reauthorize_all(requests: list[tuple[str, SubscriptionTarget]]) -> None:
    """One after the other, all within the budget: what is left when it runs out, Graph asks for again."""
    service = services().subscriptions
    with graph_deadline(LIFECYCLE_BUDGET):
        for subscription_id, target in requests:
            try:
                service.reauthorize(target, subscription_id)
            except ConnectorError as exc:
                logger.warning(
                    "Reauthorizing subscription %s failed (%s); Graph will ask again", log_id(subscription_id), exc.code
                )


# --- queue workers ----------------------------------------------------------------------------


@bp.queue_trigger(arg_name="msg", queue_name=QUEUE, connection=CONNECTION)
def writeback_events(msg: func.QueueMessage) -> None:
    """One visit event: presence + EHR writeback (``shared.writeback.worker``). Raising hands the message back."""
    body = msg.get_body().decode("utf-8", errors="replace")
    # The usage report's facts ride in the worker's visit row write (``shared.reports.fold``); an event that
    # failed permanently (its visit gone, a seal that does not open) may have written no row: recorded directly.
    outcome = services().worker.handle(body)
    if outcome.status == "failed" and not outcome.facts_kept:
        services().report_recorder.record(body)
    visit = outcome.visit
    if visit is not None and outcome.source_is_launch and visit.has_meeting and not visit.subscription_id:
        try:
            services().subscriptions.ensure(visit)
        except ConnectorError as exc:  # the upkeep timer tries again; the writeback itself is done
            # Another launch's event of the same visit is subscribing right now: expected, not a fault.
            level = logging.INFO if exc.code == "graph_subscription_exists" else logging.WARNING
            logger.log(level, "Could not subscribe to call events of visit %s: %s", log_id(visit.key), exc.code)


@bp.timer_trigger(arg_name="timer", schedule="0 */15 * * * *", run_on_startup=False, use_monitor=False)
def subscription_upkeep(timer: func.TimerRequest) -> None:
    """Create missing subscriptions, renew those near expiry, delete those of finished visits; and release the
    launch context of visits whose meeting ended and whose writebacks are over (in the same scan)."""
    service = services().subscriptions
    worker = services().worker
    for geography in services().storage.geographies:
        result = service.upkeep(geography, also=worker.release_context_when_done)
        logger.info(
            "Subscription upkeep in %s: %d created, %d renewed, %d deleted, %d failed",
            geography.value,
            result.created,
            result.renewed,
            result.deleted,
            result.failed,
        )
