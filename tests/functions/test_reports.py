"""The usage report through the functions, on Azurite: recording from queue messages, who may read it, the
page's figures, CSV/JSON exports, analytics off, the CSN opt-in, retention."""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from azure.functions.timer import TimerRequest

from connector import maintenance, portal, reports
from connector.services import reset as reset_services
from connector.services import services
from shared.configurations.model import Configuration
from shared.microsoft.entra import PortalIdentity
from shared.portal.sessions import PortalSession, SessionStore
from shared.reports import days as report_days
from shared.reports import store as report_store
from shared.reports.facts import VisitFacts
from shared.reports.preferences import ReportPreferences
from tests.functions.portal_support import Tenant, call, new_tenant, text
from tests.functions.test_portal import approved_in_storage
from tests.support.report_events import visit_messages

pytestmark = pytest.mark.azurite


@pytest.fixture
def tenants(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Tenant, Tenant]]:
    owner, stranger = new_tenant(), new_tenant()
    monkeypatch.setenv("ENTRA_ALLOWED_TENANT_IDS", ",".join(t.id for t in (owner, stranger)))
    reset_services()
    yield owner, stranger
    reset_services()


def reader(tenant: Tenant, *roles: str) -> PortalSession:
    identity = PortalIdentity(
        tenant_id=tenant.id, object_id=str(uuid.uuid4()), upn="reports@contoso.example", name="Riley Reports",
        roles=roles,
    )  # fmt: skip
    return SessionStore(services().storage.app).create(identity)


def record(config: Configuration, start: datetime, **kwargs: object) -> list[str]:
    messages = visit_messages(
        services().sealer, configuration_id=config.id, geography=config.geography.value,
        visit_key=uuid.uuid4().hex, start=start, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip
    for body in messages:
        services().report_recorder.record(body)
    return messages


def page(session: PortalSession, config: Configuration, **params: str):  # type: ignore[no-untyped-def]
    return call(reports.report_page, "GET", "r", session=session, route={"id": config.id}, params=params)


def export(session: PortalSession, config: Configuration, kind: str = "csv", **params: str) -> bytes:
    handler = reports.report_csv if kind == "csv" else reports.report_json
    response = call(handler, "GET", "x", session=session, route={"id": config.id}, params=params)
    assert response.status_code == 200, text(response)
    body: bytes = response.get_body()
    return body


def rows_of(body: bytes) -> list[dict[str, str]]:
    assert body.startswith("\ufeff".encode())
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


def today_at(hour: int) -> datetime:
    """Today at ``hour`` UTC, or an hour ago if that is still to come: a whole hour either way (facts are kept to
    the second, so a time with microseconds would never come back equal; the test once ran at 00:00 UTC)."""
    now = datetime.now(UTC)
    return min(now - timedelta(hours=1), now.replace(hour=hour)).replace(minute=0, second=0, microsecond=0)


def test_visits_recorded_from_the_queue_show_on_the_page_and_in_the_exports(tenants: tuple[Tenant, Tenant]) -> None:
    owner, _ = tenants
    config = approved_in_storage(owner)
    start = today_at(9) - timedelta(days=1)
    record(config, start, wait_minutes=2)
    record(config, start + timedelta(minutes=30), wait_minutes=4)
    record(config, start + timedelta(hours=1), outcome="no_show")
    record(config, start + timedelta(hours=2), outcome="abandoned", department="20200")

    response = page(owner.admin, config, days="7")
    assert response.status_code == 200
    html = text(response)
    assert 'id="total-visits">4<' in html
    assert 'id="total-completed">2<' in html
    assert 'id="total-no-shows">1<' in html
    assert 'id="total-abandoned">1<' in html
    assert 'id="median-wait">3 min 02 s<' in html  # the middle of the 5-second steps holding 2 and 4 minutes
    assert "<svg" in html and 'role="img"' in html and "<script" not in html.split("<main", 1)[-1].split("</main>")[0]
    assert "CSN-1001" not in html and "dr-smith" not in html and "pat-456" not in html

    rows = rows_of(export(owner.admin, config, days="7"))
    assert sorted(r["status"] for r in rows) == ["abandoned", "completed", "completed", "no_show"]
    completed = [r for r in rows if r["status"] == "completed"]
    assert sorted(r["lobby_wait_seconds"] for r in completed) == ["120", "240"]
    first = min(completed, key=lambda r: r["start"])
    assert first["start"] == (start + timedelta(minutes=3.5)).isoformat(timespec="seconds").replace("+00:00", "Z")
    assert datetime.fromisoformat(first["end"].replace("Z", "+00:00")) == start + timedelta(minutes=21)
    assert first["duration_seconds"] == str(int((21 - 3.5) * 60))
    assert first["department"] == "10501101" and first["providers"] == "1" and first["patients"] == "1"
    assert len(first["appointment_id"]) == 32 and first["organizer"]
    assert all("CSN" not in value for r in rows for value in r.values())

    document = json.loads(export(owner.admin, config, "json", days="7"))
    assert document["timeZone"] == "UTC"
    assert sorted(v["status"] for v in document["visits"]) == sorted(r["status"] for r in rows)
    assert {json.dumps(v, sort_keys=True) for v in document["visits"]} == {json.dumps(r, sort_keys=True) for r in rows}

    only = rows_of(export(owner.admin, config, days="7", department="20200"))
    assert [r["status"] for r in only] == ["abandoned"]


def test_duplicated_and_reordered_messages_record_the_same_report(tenants: tuple[Tenant, Tenant]) -> None:
    owner, _ = tenants
    config = approved_in_storage(owner)
    start = today_at(8)
    messages = record(config, start)
    once = rows_of(export(owner.admin, config, days="7"))
    writes = services().report_facts.operations
    for body in reversed(messages * 2):  # again, backwards, twice
        services().report_recorder.record(body)
    assert services().report_facts.operations == writes  # nothing new: no Table call at all
    services().report_facts.forget_memory()  # another instance: reads, finds nothing new, writes nothing
    for body in messages:
        services().report_recorder.record(body)
    assert rows_of(export(owner.admin, config, days="7")) == once


def test_who_may_read_the_report(tenants: tuple[Tenant, Tenant]) -> None:
    owner, stranger = tenants
    config = approved_in_storage(owner)
    assert page(owner.admin, config).status_code == 200
    assert page(owner.approver, config).status_code == 200
    assert page(reader(owner, "Connector.Reports"), config).status_code == 200
    assert page(owner.member, config).status_code == 404  # a clinician of the same tenant
    assert page(reader(owner, "Some.Other.Role"), config).status_code == 404
    assert page(stranger.admin, config).status_code == 404  # another tenant's admin
    assert page(reader(stranger, "Connector.Reports"), config).status_code == 404
    anonymous = call(reports.report_page, "GET", "r", route={"id": config.id})
    assert anonymous.status_code in (302, 303)
    for session in (owner.member, stranger.admin):
        response = call(reports.report_csv, "GET", "x", session=session, route={"id": config.id})
        assert response.status_code == 404
    listed = text(call(reports.report_index, "GET", "r", session=reader(owner, "Connector.Reports")))
    assert config.organization in listed and config.id in listed
    assert config.id not in text(call(reports.report_index, "GET", "r", session=owner.member))


def test_analytics_off_records_nothing(tenants: tuple[Tenant, Tenant]) -> None:
    owner, _ = tenants
    config = approved_in_storage(owner)
    saved = call(
        reports.report_settings, "POST", "s", session=owner.admin, route={"id": config.id},
        form={"csrf": owner.admin.csrf_token, "retention_days": "90"},
    )  # fmt: skip
    assert saved.status_code == 303
    assert services().report_preferences.get(config.id).analytics is False
    record(config, today_at(7))
    table = services().storage.for_geography(config.geography).table(report_store.TABLE)
    assert not list(table.query_entities("PartitionKey ge @a and PartitionKey lt @b", parameters={
        "a": f"{config.id}_", "b": f"{config.id}_~"}))  # fmt: skip
    assert 'id="analytics-off"' in text(page(owner.admin, config))


def test_only_the_configurations_admins_change_the_settings_with_csrf(tenants: tuple[Tenant, Tenant]) -> None:
    owner, _ = tenants
    config = approved_in_storage(owner)
    form = {"retention_days": "30", "analytics": "on"}
    forged = call(reports.report_settings, "POST", "s", session=owner.admin, route={"id": config.id},
                  form={**form, "csrf": "forged"})  # fmt: skip
    assert forged.status_code == 403
    approver = call(reports.report_settings, "POST", "s", session=owner.approver, route={"id": config.id},
                    form={**form, "csrf": owner.approver.csrf_token})  # fmt: skip
    assert approver.status_code == 403
    bad = call(reports.report_settings, "POST", "s", session=owner.admin, route={"id": config.id},
               form={**form, "retention_days": "0", "csrf": owner.admin.csrf_token})  # fmt: skip
    assert bad.status_code == 400
    assert services().report_preferences.get(config.id) == ReportPreferences()


def test_the_csn_is_shown_only_when_opted_in_and_sealed_at_rest(tenants: tuple[Tenant, Tenant]) -> None:
    owner, _ = tenants
    config = approved_in_storage(owner)
    services().report_preferences.save(config.id, ReportPreferences(show_csn=True))
    record(config, today_at(6), csn="CSN-777001")
    rows = rows_of(export(owner.admin, config, days="7"))
    assert [r["appointment_id"] for r in rows] == ["CSN-777001"]
    assert "CSN-777001" in text(page(owner.admin, config, days="7"))
    table = services().storage.for_geography(config.geography).table(report_store.TABLE)
    raw = list(table.query_entities("PartitionKey ge @a and PartitionKey lt @b", parameters={
        "a": f"{config.id}_", "b": f"{config.id}_~"}))  # fmt: skip
    assert raw and all("CSN-777001" not in str(dict(row)) for row in raw)
    assert all(row["Csn"] for row in raw)
    services().report_preferences.save(config.id, ReportPreferences(show_csn=False))
    assert rows_of(export(owner.admin, config, days="7"))[0]["appointment_id"] != "CSN-777001"


def test_retention_the_timer_deletes_days_past_it_and_a_shortened_one_at_once(tenants: tuple[Tenant, Tenant]) -> None:
    owner, _ = tenants
    config = approved_in_storage(owner)
    now = datetime.now(UTC)
    # At noon, so that no visit runs past midnight into another day (the test once ran at 23:40 UTC).
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    old, recent = noon - timedelta(days=20), noon - timedelta(days=2)
    record(config, old)
    record(config, recent)
    assert services().report_preferences.all()[config.id].geography == config.geography.value  # its first fact
    # A day past the default 90 (written straight to the store: the recorder refuses facts that old).
    ancient = (now - timedelta(days=95)).date()
    services().report_facts.record(config.geography, config.id, "ancient-visit", ancient, VisitFacts())
    assert len(rows_of(export(owner.admin, config, days="30"))) == 2
    facts = services().storage.for_geography(config.geography).table(report_store.TABLE)

    def days_stored() -> set[str]:
        rows = facts.query_entities("PartitionKey ge @a and PartitionKey lt @b", parameters={
            "a": f"{config.id}_", "b": f"{config.id}_~"})  # fmt: skip
        return {str(r["PartitionKey"]).rsplit("_", 1)[1] for r in rows}

    assert days_stored() == {f"{ancient:%Y%m%d}", f"{old:%Y%m%d}", f"{recent:%Y%m%d}"}
    maintenance.report_upkeep(TimerRequest(past_due=False))
    assert days_stored() == {f"{old:%Y%m%d}", f"{recent:%Y%m%d}"}  # 90 days by default

    saved = call(
        reports.report_settings, "POST", "s", session=owner.admin, route={"id": config.id},
        form={"csrf": owner.admin.csrf_token, "retention_days": "7", "analytics": "on"},
    )  # fmt: skip
    assert saved.status_code == 303
    assert services().report_preferences.get(config.id).retention_days == 7
    maintenance.report_upkeep(TimerRequest(past_due=False))
    assert days_stored() == {f"{recent:%Y%m%d}"}
    summaries = services().storage.for_geography(config.geography).table(report_days.TABLE)
    kept = {str(r["RowKey"])[:8] for r in summaries.query_entities("PartitionKey eq @pk", parameters={"pk": config.id})}
    assert f"{old:%Y%m%d}" not in kept
    assert len(rows_of(export(owner.admin, config, days="30"))) == 1  # and the range stops at the retention


def test_summaries_computed_by_the_timer_are_what_the_page_reads(tenants: tuple[Tenant, Tenant]) -> None:
    owner, _ = tenants
    config = approved_in_storage(owner)
    record(config, today_at(5))
    maintenance.report_upkeep(TimerRequest(past_due=False))
    svc = services().reports
    report = svc.report(config, {"days": "7"})
    assert report.computed_days <= 6  # the days the timer did not compute are computed once, then stored
    again = svc.report(config, {"days": "7"})
    assert again.computed_days == 0 and again.totals.visits == 1
    # A new visit's facts mark their days: the page computes those again at once (the timer would have).
    record(config, today_at(5) + timedelta(minutes=5))
    fresh = svc.report(config, {"days": "7"})
    assert fresh.totals.visits == 2 and fresh.computed_days <= 1  # its day (unless another test's timer just did)
    assert svc.report(config, {"days": "7"}).computed_days == 0
    maintenance.report_upkeep(TimerRequest(past_due=False))
    assert svc.report(config, {"days": "7"}).totals.visits == 2


def computed_at(config: Configuration) -> dict[date, datetime | None]:
    """When each of the three recent days' summaries of ``config`` was last computed."""
    today = datetime.now(UTC).date()
    stored = services().report_days.stored(config.geography, config.id, today - timedelta(days=2), today)
    return {day: summary.computed for day, (summary, _) in stored.items()}


def test_the_timer_computes_a_day_again_only_when_facts_that_count_on_it_were_written(
    tenants: tuple[Tenant, Tenant],
) -> None:
    """Yesterday (and today) whose facts did not change since their summaries were computed cost the timer
    nothing: each write of a visit's facts marks that visit's days, and only a marked day is computed again."""
    import azure.functions as func

    from connector import events
    from shared.visits.model import VisitContext

    owner, _ = tenants
    config = without_writeback(owner)
    today = datetime.now(UTC).date()
    key = uuid.uuid4().hex
    services().visits.get_or_create(config.geography, key, config.id, VisitContext())
    start = today_at(6) - timedelta(days=1)  # yesterday's visit: its facts ride in its row until the timer copies
    for body in visit_messages(services().sealer, configuration_id=config.id, geography=config.geography.value,
                               visit_key=key, start=start):  # fmt: skip
        events.writeback_events(func.QueueMessage(body=body.encode()))
    maintenance.report_upkeep(TimerRequest(past_due=False))
    first = computed_at(config)
    assert all(first.values())  # each recent day of a configuration with facts, computed once
    maintenance.report_upkeep(TimerRequest(past_due=False))
    assert computed_at(config) == first  # nothing written since: nothing computed again

    record(config, today_at(8))  # today's visit, written directly: its day is marked (it has no other)
    maintenance.report_upkeep(TimerRequest(past_due=False))
    after = computed_at(config)
    assert after[today] != first[today]
    assert all(after[day] == first[day] for day in (today - timedelta(days=2), today - timedelta(days=1)))
    maintenance.report_upkeep(TimerRequest(past_due=False))
    assert computed_at(config) == after
    recent = {"from": str(today - timedelta(days=2)), "to": str(today)}
    report = services().reports.report(config, recent)
    assert report.totals.visits == 2 and report.computed_days == 0  # the page reads what the timer computed


def test_deleting_the_configuration_deletes_its_report(tenants: tuple[Tenant, Tenant]) -> None:
    owner, _ = tenants
    config = approved_in_storage(owner)
    record(config, today_at(4))
    services().report_days.compute(config.geography, config.id, today_at(4).date(), now=datetime.now(UTC))  # fmt: skip
    response = call(
        portal.delete_configuration, "POST", "d", session=owner.admin, route={"id": config.id},
        form={"csrf": owner.admin.csrf_token, "confirm": "yes", "etag": str(config.etag)},
    )  # fmt: skip
    assert response.status_code == 303
    record(config, today_at(4) + timedelta(minutes=1))  # a late event of the deleted configuration: not recorded
    maintenance.report_upkeep(TimerRequest(past_due=False))
    account = services().storage.for_geography(config.geography)
    facts = account.table(report_store.TABLE).query_entities(
        "PartitionKey ge @a and PartitionKey lt @b", parameters={"a": f"{config.id}_", "b": f"{config.id}_~"}
    )
    assert not list(facts)

    def summaries() -> list[object]:
        return list(
            account.table(report_days.TABLE).query_entities("PartitionKey eq @pk", parameters={"pk": config.id})
        )

    assert not summaries()
    assert services().report_preferences.all()[config.id].deleted  # the mark stays an hour (late events elsewhere)
    maintenance.report_upkeep(TimerRequest(past_due=False))  # the timer computes nothing for it any more
    assert not list(
        account.table(report_days.TABLE).query_entities("PartitionKey eq @pk", parameters={"pk": config.id})
    )
    settings_table = services().storage.app.table("ReportSettings")
    settings_table.update_entity({"PartitionKey": config.id, "RowKey": "report",
                                  "UpdatedAt": datetime.now(UTC) - timedelta(hours=2)})  # fmt: skip
    maintenance.report_upkeep(TimerRequest(past_due=False))
    assert config.id not in services().report_preferences.all()


def test_a_visit_across_midnight_counts_once_on_its_first_day_with_all_its_facts(
    tenants: tuple[Tenant, Tenant],
) -> None:
    owner, _ = tenants
    config = approved_in_storage(owner)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    record(config, midnight - timedelta(minutes=10))  # launched 23:50, admitted 23:53:30, ends 00:11
    report = services().reports.report(config, {"days": "7"})
    assert report.totals.visits == 1
    by_day = {day: totals.visits for day, totals in report.per_day}
    assert by_day[(midnight - timedelta(days=1)).date()] == 1 and by_day[midnight.date()] == 0
    [row] = rows_of(export(owner.admin, config, days="7"))
    assert row["day"] == (midnight - timedelta(days=1)).date().isoformat()
    assert row["duration_seconds"] == str(int((21 - 3.5) * 60)) and row["status"] == "completed"


def test_a_days_summary_reads_the_day_before_by_its_keys_and_in_full_only_the_visits_across_midnight(
    tenants: tuple[Tenant, Tenant], monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, _ = tenants
    config = approved_in_storage(owner)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    day, before = midnight.date(), (midnight - timedelta(days=1)).date()
    record(config, midnight - timedelta(minutes=10))  # across midnight: it began the day before
    record(config, midnight - timedelta(hours=14))  # the day before only
    record(config, midnight - timedelta(hours=9))  # the day before only
    record(config, midnight + timedelta(hours=10))  # the day itself
    days = services().report_days
    facts = days._facts
    partitions: list[date] = []
    rows: list[date] = []
    read_day, read_one = facts.day, facts.one
    monkeypatch.setattr(facts, "day", lambda g, c, d: partitions.append(d) or read_day(g, c, d))
    monkeypatch.setattr(facts, "one", lambda g, c, v, d: rows.append(d) or read_one(g, c, v, d))

    summary = days.compute(config.geography, config.id, day, now=datetime.now(UTC))
    assert sum(t.visits for t in summary.departments.values()) == 1  # the visit across midnight is the day before's
    assert partitions == [day, day + timedelta(days=1)] and rows == [before]

    partitions.clear()
    rows.clear()
    monkeypatch.setattr(report_days, "MIDNIGHT_READS_AT_MOST", 0)  # more visits across midnight: the whole partition
    assert days.compute(config.geography, config.id, day, now=datetime.now(UTC)).departments == summary.departments
    assert sorted(partitions) == [before, day, day + timedelta(days=1)] and rows == []
    by_day = {d: totals.visits for d, totals in services().reports.report(config, {"days": "7"}).per_day}
    assert by_day[before] == 3 and by_day[day] == 1

    partitions.clear()  # an export of the day alone: the day before it tells only which visits began then
    exported = list(services().reports.export_rows(config, {"from": day.isoformat(), "to": day.isoformat()}))
    assert [row["day"] for row in exported] == [day.isoformat()]
    assert sorted(partitions) == [day, day + timedelta(days=1)]


def test_a_late_fact_of_a_visit_across_midnight_computes_its_first_day_again(tenants: tuple[Tenant, Tenant]) -> None:
    """The visit counts on yesterday, where it began; its last fact lands in today's partition. Copying that fact
    marks every day of the visit, so yesterday's summary is computed again and shows the visit's whole length."""
    import azure.functions as func

    from connector import events
    from shared.visits.model import VisitContext

    owner, _ = tenants
    config = without_writeback(owner)
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    key = uuid.uuid4().hex
    services().visits.get_or_create(config.geography, key, config.id, VisitContext())
    midnight = datetime.combine(today, datetime.min.time(), UTC)
    bodies = visit_messages(services().sealer, configuration_id=config.id, geography=config.geography.value,
                            visit_key=key, start=midnight - timedelta(minutes=10))  # 23:50 to 00:11  # fmt: skip
    for body in bodies[:-2]:  # up to the patient's admission, 23:53:30
        events.writeback_events(func.QueueMessage(body=body.encode()))
    maintenance.report_upkeep(TimerRequest(past_due=False))
    before = computed_at(config)
    for body in bodies[-2:]:  # both leave after midnight: facts of today's partition
        events.writeback_events(func.QueueMessage(body=body.encode()))
    maintenance.report_upkeep(TimerRequest(past_due=False))
    after = computed_at(config)
    assert after[yesterday] != before[yesterday] and after[today] != before[today]
    assert after[today - timedelta(days=2)] == before[today - timedelta(days=2)]
    report = services().reports.report(config, {"from": str(yesterday), "to": str(today)})
    assert report.computed_days == 0 and dict(report.per_day)[yesterday].visits == 1
    assert report.totals.durations == {1020: 1}  # the patient's 17.5 minutes in the meeting, in its bucket


def test_a_days_mark_only_moves_forward(tenants: tuple[Tenant, Tenant]) -> None:
    """Two writers mark the same day; the one whose write lands last may hold the older time: it must not win."""
    owner, _ = tenants
    config = approved_in_storage(owner)
    day = datetime.now(UTC).date()
    later = datetime.now(UTC).replace(microsecond=0)
    days = services().report_days
    days.mark_touched(config.geography, config.id, [day], now=later)
    days.mark_touched(config.geography, config.id, [day], now=later - timedelta(seconds=30))
    assert days.stored(config.geography, config.id, day, day)[day][1] == later


def test_a_copy_that_fails_half_way_still_marks_the_days_of_what_got_through(
    tenants: tuple[Tenant, Tenant], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy of a visit across midnight writes yesterday's facts, then storage fails on today's: the run raises
    (the watermark stays) and the next run would find yesterday's row unchanged and mark nothing, so this run marks
    the visit's days on its way out."""
    import azure.functions as func
    from azure.core.exceptions import HttpResponseError

    from connector import events
    from shared.visits.model import VisitContext

    owner, _ = tenants
    config = without_writeback(owner)
    today = datetime.now(UTC).date()
    key = uuid.uuid4().hex
    services().visits.get_or_create(config.geography, key, config.id, VisitContext())
    midnight = datetime.combine(today, datetime.min.time(), UTC)
    for body in visit_messages(services().sealer, configuration_id=config.id, geography=config.geography.value,
                               visit_key=key, start=midnight - timedelta(minutes=10)):  # fmt: skip
        events.writeback_events(func.QueueMessage(body=body.encode()))
    record = services().report_facts.record

    def failing_after_the_first(*args: object, **kwargs: object) -> bool:
        if args[1] == config.id and args[3] == today:  # this visit's second day (other tests' rows copy as usual)
            raise HttpResponseError(message="Server busy", response=None)
        return record(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(services().report_facts, "record", failing_after_the_first)
    with pytest.raises(HttpResponseError):
        services().report_flush.flush(config.geography)
    stored = services().report_days.stored(config.geography, config.id, today - timedelta(days=1), today)
    assert all(changed is not None for _, changed in stored.values())  # both of the visit's days are marked


def test_an_open_days_summary_is_computed_again_after_settled_whatever_the_marks() -> None:
    """The repair of a lost mark: an open day's summary older than ``SETTLED`` is stale; a closed day's is not."""
    now = datetime.now(UTC)
    day = now.date()
    summary = report_days.DaySummary(day, computed=now - timedelta(minutes=30), precise=True)
    assert report_days.usable(summary, None, now=now)  # 30 minutes: still settled (an unmarked one: FRESH, 20)
    assert not report_days.usable(replace(summary, precise=False), None, now=now)
    assert not report_days.usable(summary, now - timedelta(minutes=1), now=now)  # written since it was computed
    later = now + report_days.SETTLED
    assert not report_days.usable(summary, None, now=later)
    closed = report_days.DaySummary(day - timedelta(days=3), computed=now - timedelta(days=1), precise=True)
    assert report_days.usable(closed, None, now=later)


def test_a_burst_of_one_visits_events_on_many_threads_records_once_without_contention(
    tenants: tuple[Tenant, Tenant],
) -> None:
    owner, _ = tenants
    config = approved_in_storage(owner)
    start = today_at(3)
    messages = []
    for n in range(40):  # one visit: 40 patients of a group visit, each through the lobby
        messages += visit_messages(
            services().sealer, configuration_id=config.id, geography=config.geography.value, visit_key="group-visit",
            start=start + timedelta(seconds=n), wait_minutes=1 + n / 10, first_patient=n,
        )  # fmt: skip
    random.Random(3).shuffle(messages)
    with ThreadPoolExecutor(max_workers=24) as pool:
        list(pool.map(services().report_recorder.record, messages))  # raises if any recording failed
    [row] = rows_of(export(owner.admin, config, days="7"))
    assert row["status"] == "completed" and row["providers"] == "1" and row["patients"] == "40"
    assert len(row["lobby_waits"].split()) == 40


def test_the_configuration_switch_opens_only_readable_reports(tenants: tuple[Tenant, Tenant]) -> None:
    owner, stranger = tenants
    first, second = approved_in_storage(owner), approved_in_storage(owner)
    html = text(page(owner.admin, first))
    assert 'id="switch-configuration"' in html and second.id in html
    switched = call(reports.report_index, "GET", "r", session=owner.admin, params={"configuration": second.id})
    assert switched.status_code == 303 and switched.headers["Location"].endswith(f"/configurations/{second.id}/report")
    refused = call(reports.report_index, "GET", "r", session=stranger.admin, params={"configuration": second.id})
    assert refused.status_code == 404


def test_an_event_older_than_the_retention_is_not_recorded(tenants: tuple[Tenant, Tenant]) -> None:
    owner, _ = tenants
    config = approved_in_storage(owner)
    services().report_preferences.save(config.id, ReportPreferences(retention_days=30))
    record(config, datetime.now(UTC) - timedelta(days=31))
    table = services().storage.for_geography(config.geography).table(report_store.TABLE)
    assert not list(table.query_entities("PartitionKey ge @a and PartitionKey lt @b", parameters={
        "a": f"{config.id}_", "b": f"{config.id}_~"}))  # fmt: skip


def test_report_rows_hold_no_ehr_identifier_name_or_free_text(tenants: tuple[Tenant, Tenant]) -> None:
    """A privacy scan of the report tables: every column of every row the report wrote for a configuration."""
    owner, _ = tenants
    config = approved_in_storage(owner)
    messages = record(config, today_at(10), csn="CSN-424242", department="10501101")
    services().report_days.compute(config.geography, config.id, today_at(10).date(), now=datetime.now(UTC))  # fmt: skip
    account = services().storage.for_geography(config.geography)
    rows = [
        dict(r)
        for r in account.table(report_store.TABLE).query_entities(
            "PartitionKey ge @a and PartitionKey lt @b", parameters={"a": f"{config.id}_", "b": f"{config.id}_~"}
        )
    ]
    rows += [dict(r) for r in account.table(report_days.TABLE).query_entities(
        "PartitionKey eq @pk", parameters={"pk": config.id})]  # fmt: skip
    assert rows
    dump = json.dumps(rows, default=str)
    for secret in ("CSN-424242", "dr-smith-123", "pat-456", "Practitioner/", "Patient/", "Smith", "leg-patient"):
        assert secret not in dump, secret
    declared = {f.name for store in (*report_store.INVENTORY, *report_days.INVENTORY) for f in store.fields}
    assert {column for row in rows for column in row} <= declared
    visit_key = json.loads(messages[0])["visitKey"]
    assert visit_key not in dump  # the report's visit id is keyed apart from the visit's own key


def test_a_departments_page_of_a_busy_day_is_filled_from_as_many_rows_as_it_takes(
    tenants: tuple[Tenant, Tenant], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The department is inside each row: a filtered page reads on until it is full, and continues where it left off."""
    from shared.reports import service as report_service

    monkeypatch.setattr(report_service, "PAGE_ROWS", 4)  # pages of 4, so eighteen visits make several
    owner, _ = tenants
    config = approved_in_storage(owner)
    start = today_at(9) - timedelta(days=1)
    for n in range(18):  # every third visit is the cardiology clinic's: 6 of 18
        record(config, start + timedelta(minutes=n), department="CARDIO" if n % 3 == 0 else "10501101")
    svc = services().reports

    first, after = svc.appointments(config, start.date(), department="CARDIO")
    assert [v.summary.department for v in first] == ["CARDIO"] * 4 and after is not None  # a full page, more to come
    rest, end = svc.appointments(config, start.date(), department="CARDIO", after=after)
    assert [v.summary.department for v in rest] == ["CARDIO"] * 2 and end is None
    assert len({v.id for v in first + rest}) == 6  # each of the six once

    everyone, more = svc.appointments(config, start.date())
    assert len(everyone) == 4 and more is not None  # unfiltered: one query, one page


def without_writeback(tenant: Tenant) -> Configuration:
    """An approved configuration whose events are presence only (no EHR to call here)."""
    from shared.configurations import model as cfg
    from shared.configurations.model import Status, WritebackMode
    from shared.portal.service import to_input
    from tests.functions.portal_support import configuration_form, repository

    now = datetime.now(UTC)
    values = configuration_form(
        f"https://ehr-{uuid.uuid4().hex[:8]}.contoso.example/api/FHIR/R4", writeback_mode="none"
    )
    config = cfg.new_configuration(tenant.id, to_input(values), by="admin@contoso.example", now=now)
    assert config.writeback_mode is WritebackMode.NONE
    return repository().create(
        replace(config, status=Status.APPROVED, approved_by="analyst@contoso.example", approved_at=now)
    )


def test_visits_through_the_writeback_queue_fold_into_their_rows_and_the_timer_copies_the_same_report(
    tenants: tuple[Tenant, Tenant],
) -> None:
    """The production path: each event's facts ride in the worker's visit row write (no report Table call per
    event); the upkeep timer copies them into ReportVisits. The report equals the one recorded event by event."""
    import azure.functions as func

    from benchmarks.table_operations import TableOperations
    from connector import events
    from shared.visits.model import VisitContext

    owner, _ = tenants
    direct = approved_in_storage(owner)
    folded = without_writeback(owner)
    start = today_at(9) - timedelta(days=1)
    plans: list[dict[str, object]] = [
        {"wait_minutes": 2}, {"wait_minutes": 4, "csn": "CSN-2"}, {"outcome": "no_show"},
        {"outcome": "abandoned", "department": "20200"}, {"patients": 3, "wait_minutes": 1},
    ]  # fmt: skip
    per_event: list[dict[str, int]] = []
    for n, plan in enumerate(plans):
        at = start + timedelta(minutes=30 * n)
        record(direct, at, **plan)
        key = uuid.uuid4().hex
        services().visits.get_or_create(folded.geography, key, folded.id, VisitContext())
        bodies = visit_messages(
            services().sealer, configuration_id=folded.id, geography=folded.geography.value, visit_key=key,
            start=at, **plan,  # type: ignore[arg-type]
        )  # fmt: skip
        random.Random(n).shuffle(bodies)  # any order gives the same facts
        for body in bodies + bodies[:2]:  # and a duplicate delivery adds nothing
            with TableOperations().installed() as ops:
                events.writeback_events(func.QueueMessage(body=body.encode()))
                per_event.append(dict(ops.take()))
    # (the first event reads the configuration and its report settings into this process's memos)
    assert all(set(ops) <= {"Visits.get_entity", "Visits.update_entity"} for ops in per_event[1:]), per_event
    assert not list(services().report_facts.day(folded.geography, folded.id, start.date()))  # not copied yet

    maintenance.report_upkeep(TimerRequest(past_due=False))
    services().report_facts.forget_memory()

    def rows(config: Configuration) -> list[dict[str, str]]:
        found = rows_of(export(owner.admin, config, days="7"))
        for row in found:
            assert len(row.pop("appointment_id")) == 32 and row.pop("organizer")  # keyed per configuration
        return sorted(found, key=lambda r: r["first_launch"])

    assert rows(folded) == rows(direct)
    assert len(rows(folded)) == len(plans)
    assert services().report_flush.flush(folded.geography) == 0  # copied again (the overlap): nothing changes


def test_the_sweep_copies_a_visits_facts_before_deleting_its_row(tenants: tuple[Tenant, Tenant]) -> None:
    import azure.functions as func

    from connector import events
    from shared.visits.model import VisitContext

    owner, _ = tenants
    config = without_writeback(owner)
    key = uuid.uuid4().hex
    services().visits.get_or_create(config.geography, key, config.id, VisitContext())
    for body in visit_messages(services().sealer, configuration_id=config.id, geography=config.geography.value,
                               visit_key=key, start=today_at(7)):  # fmt: skip
        events.writeback_events(func.QueueMessage(body=body.encode()))
    table = services().storage.for_geography(config.geography).table("Visits")
    table.update_entity({"PartitionKey": config.geography.value, "RowKey": key,
                         "ExpiresAt": datetime.now(UTC) - timedelta(minutes=1)})  # fmt: skip
    maintenance.sweep_expired_state(TimerRequest(past_due=False))
    assert services().visits.get(config.geography, key) is None
    [row] = rows_of(export(owner.admin, config, days="7"))
    assert row["status"] == "completed"
