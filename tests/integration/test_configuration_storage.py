"""ConfigurationRepository against Azurite: failures part-way through a write leave no broken state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.configurations import model as cfg
from shared.configurations import repository as configuration_store
from shared.configurations.model import ConfigurationInput, Environment, Vendor, WritebackMode
from shared.configurations.repository import ConfigurationRepository
from shared.kernel.errors import Conflict, NotFound, StorageUnavailable, StoredDataError
from shared.kernel.settings import Geography
from shared.storage.accounts import Storage
from shared.writeback.model import WritebackTarget
from shared.writeback.targets import ConfigurationTargets

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _input(url: str) -> ConfigurationInput:
    return ConfigurationInput(
        organization="Contoso Health",
        fhir_base_url=url,
        environment=Environment.TEST,
        approver_upn="analyst@contoso.example",
        geography=Geography.AMERICAS,
        vendor=Vendor.EPIC,
        provider_client_id="prov",
        patient_client_id="pat",
        writeback_mode=WritebackMode.EPIC,
    )


@pytest.fixture
def repository(storage: Storage) -> ConfigurationRepository:
    return ConfigurationRepository(storage.app)


@pytest.fixture
def tenant() -> str:
    return str(uuid.uuid4())


def _approved(repository: ConfigurationRepository, tenant: str, url: str) -> cfg.Configuration:
    config = repository.create(cfg.new_configuration(tenant, _input(url), by="admin@contoso.example", now=NOW))
    proven = cfg.with_ehr_signin(config, upn="analyst@contoso.example", oid="oid-1", now=NOW)
    done = cfg.approved(proven, upn="analyst@contoso.example", oid="oid-1", now=NOW)
    assert config.etag is not None
    return repository.update(config, done, etag=config.etag)


def _failing(*args: object) -> None:
    raise StorageUnavailable("Storage app is unavailable.")


def test_a_failure_after_deleting_the_row_leaves_nothing_launchable_and_the_url_reusable(
    repository: ConfigurationRepository, tenant: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"https://ehr-{unique}.example.org/api/FHIR/R4"
    config = _approved(repository, tenant, url)
    assert repository.find_for_launch(config.id, url) is not None

    with monkeypatch.context() as patched:
        patched.setattr(repository, "_release", _failing)  # storage fails between the two steps
        with pytest.raises(StorageUnavailable):
            repository.delete(config, etag=config.etag)

    # Not "approved but unlaunchable": the configuration is gone, and so is every launch for it.
    with pytest.raises(NotFound):
        repository.get(tenant, config.id)
    assert repository.find_for_launch(config.id, url) is None
    assert all(c.id != config.id for c in repository.list_for_tenant(tenant))

    # The orphaned URL guard is reclaimed once it is past the grace for in-flight submissions.
    monkeypatch.setattr(configuration_store, "RESERVATION_GRACE", timedelta(0))
    again = repository.create(cfg.new_configuration(tenant, _input(url), by="admin@contoso.example", now=NOW))
    assert repository.find_for_launch(again.id, url) is not None
    assert repository.find_for_launch(config.id, url) is None


def test_a_fresh_guard_is_never_reclaimed(repository: ConfigurationRepository, tenant: str, unique: str) -> None:
    """``create`` reserves before writing its row: a young guard whose row is missing may be a submission in flight."""
    url = f"https://ehr-{unique}.example.org/api/FHIR/R4"
    in_flight = cfg.new_configuration(tenant, _input(url), by="admin@contoso.example", now=NOW)
    repository._reserve(in_flight.fhir_base_url, tenant, in_flight.id)
    with pytest.raises(Conflict) as caught:
        repository.create(cfg.new_configuration(tenant, _input(url), by="admin@contoso.example", now=NOW))
    assert caught.value.code == "duplicate_fhir_url"


def test_a_guard_of_an_existing_configuration_is_never_reclaimed(
    repository: ConfigurationRepository, tenant: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"https://ehr-{unique}.example.org/api/FHIR/R4"
    first = repository.create(cfg.new_configuration(tenant, _input(url), by="admin@contoso.example", now=NOW))
    monkeypatch.setattr(configuration_store, "RESERVATION_GRACE", timedelta(0))
    with pytest.raises(Conflict):
        repository.create(cfg.new_configuration(tenant, _input(url), by="admin@contoso.example", now=NOW))
    assert repository.find_for_launch(first.id, url) is not None


def test_a_stale_delete_changes_nothing(repository: ConfigurationRepository, tenant: str, unique: str) -> None:
    url = f"https://ehr-{unique}.example.org/api/FHIR/R4"
    config = repository.create(cfg.new_configuration(tenant, _input(url), by="admin@contoso.example", now=NOW))
    assert config.etag is not None
    repository.update(config, cfg.edited(config, _input(url), by="x", now=NOW), etag=config.etag)
    with pytest.raises(Conflict):
        repository.delete(config, etag=config.etag)
    assert repository.find_for_launch(config.id, url) is not None


def test_an_edit_that_fails_for_any_reason_releases_the_new_url(
    repository: ConfigurationRepository, tenant: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_url = f"https://ehr-{unique}.example.org/old"
    new_url = f"https://ehr-{unique}.example.org/new"
    config = repository.create(cfg.new_configuration(tenant, _input(old_url), by="admin@contoso.example", now=NOW))
    assert config.etag is not None
    table = repository._table()

    class Unavailable:
        def __getattr__(self, name: str) -> object:
            return getattr(table, name)

        def update_entity(self, *args: object, **kwargs: object) -> None:
            raise StorageUnavailable("Storage app is unavailable.")

    with monkeypatch.context() as patched:
        patched.setattr(repository, "_table", lambda: Unavailable())
        with pytest.raises(StorageUnavailable):
            repository.update(config, cfg.edited(config, _input(new_url), by="x", now=NOW), etag=config.etag)

    # The new URL is free at once (no grace needed): another configuration may take it.
    other = repository.create(cfg.new_configuration(tenant, _input(new_url), by="admin@contoso.example", now=NOW))
    assert repository.find_for_launch(other.id, new_url) is not None
    assert repository.find_for_launch(config.id, old_url) is not None


def test_an_edit_awaiting_approval_round_trips_and_holds_both_urls(
    repository: ConfigurationRepository, tenant: str, unique: str
) -> None:
    old_url, new_url = f"https://ehr-{unique}.example.org/live", f"https://ehr-{unique}.example.org/edited"
    config = _approved(repository, tenant, old_url)
    assert config.etag is not None
    changed = cfg.edited(config, _input(new_url), by="admin@contoso.example", now=NOW)
    saved = repository.update(config, changed, etag=config.etag)
    stored = repository.get(tenant, config.id)
    assert stored.edit == changed.edit and stored.fhir_base_url == old_url  # the edit, as JSON, beside the live row
    assert repository.find_for_launch(config.id, old_url) == stored  # launches: the approved version
    assert repository.find_for_launch(config.id, new_url) is None  # the edited URL: reserved, not allowed
    with pytest.raises(Conflict):
        repository.create(cfg.new_configuration(tenant, _input(new_url), by="admin@contoso.example", now=NOW))
    assert saved.etag is not None
    repository.delete(saved, etag=saved.etag)  # deleting removes both
    for url in (old_url, new_url):
        repository.create(cfg.new_configuration(tenant, _input(url), by="admin@contoso.example", now=NOW))


def test_a_guard_left_by_a_discarded_edit_is_reclaimed(
    repository: ConfigurationRepository, tenant: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rejecting an edit releases its URL after the row is written; if that release fails, the guard is an orphan."""
    old_url, new_url = f"https://ehr-{unique}.example.org/kept", f"https://ehr-{unique}.example.org/dropped"
    config = _approved(repository, tenant, old_url)
    assert config.etag is not None
    pending = repository.update(config, cfg.edited(config, _input(new_url), by="x", now=NOW), etag=config.etag)
    assert pending.etag is not None
    with monkeypatch.context() as patched:
        patched.setattr(repository, "_release", _failing)
        with pytest.raises(StorageUnavailable):
            repository.update(pending, cfg.edit_discarded(pending), etag=pending.etag)
    assert repository.get(tenant, config.id).edit is None  # the rejection itself landed
    monkeypatch.setattr(configuration_store, "RESERVATION_GRACE", timedelta(0))
    other = repository.create(cfg.new_configuration(tenant, _input(new_url), by="admin@contoso.example", now=NOW))
    assert repository.find_for_launch(other.id, new_url) is not None
    assert repository.find_for_launch(config.id, old_url) is not None


def test_an_unreadable_stored_row_is_a_server_fault(repository: ConfigurationRepository, tenant: str) -> None:
    row_id = str(uuid.uuid4())
    repository._table().create_entity({"PartitionKey": tenant, "RowKey": row_id, "Organization": "Broken"})
    with pytest.raises(StoredDataError) as caught:
        repository.get(tenant, row_id)
    assert caught.value.status == 500


def test_writeback_targets_come_from_approved_configurations_by_id_alone(
    repository: ConfigurationRepository, tenant: str, unique: str
) -> None:
    approved = _approved(repository, tenant, f"https://ehr-{unique}.example.org/api/FHIR/R4")
    pending = repository.create(
        cfg.new_configuration(tenant, _input(f"https://ehr2-{unique}.example.org/r4"), by="a@contoso.example", now=NOW)
    )
    broken = str(uuid.uuid4())
    repository._table().create_entity({"PartitionKey": tenant, "RowKey": broken, "Status": "approved"})
    ticks = [0.0]
    targets = ConfigurationTargets(repository, ttl=60, clock=lambda: ticks[0])

    target = targets.target_for(approved.id)
    assert target == WritebackTarget(WritebackMode.EPIC, approved.fhir_base_url, "prov")
    for missing in (pending.id, str(uuid.uuid4()), "not-an-id"):
        with pytest.raises(NotFound, match="no approved configuration"):
            targets.target_for(missing)
    with pytest.raises(NotFound, match="no usable writeback settings"):
        targets.target_for(broken)

    repository.delete(approved)  # cached for the TTL, then read again
    assert targets.target_for(approved.id) == target
    ticks[0] = 61.0
    with pytest.raises(NotFound, match="no approved configuration"):
        targets.target_for(approved.id)


def test_a_patient_side_url_is_reserved_in_the_tenant_and_matches_patient_launches_only(
    repository: ConfigurationRepository, tenant: str, unique: str
) -> None:
    ehr = f"https://fhir-ehr-{unique}.example.org/r4/{tenant}"
    myrecord = f"https://fhir-myrecord-{unique}.example.org/r4/{tenant}"
    data = cfg.ConfigurationInput(
        **{**cfg.input_values(_input(ehr)), "vendor": Vendor.ORACLE, "patient_fhir_base_url": myrecord}
    )
    config = repository.create(cfg.new_configuration(tenant, data, by="admin@contoso.example", now=NOW))
    stored = repository.get(tenant, config.id)
    assert stored.patient_fhir_base_url == myrecord
    assert repository.find_for_launch(config.id, myrecord, patient=True) == stored
    assert repository.find_for_launch(config.id, myrecord) is None  # a provider launch: refused
    assert repository.find_for_launch(config.id, ehr) == stored
    with pytest.raises(Conflict):  # the patient-side URL is taken in this tenant, like the FHIR URL
        repository.create(cfg.new_configuration(tenant, _input(myrecord), by="admin@contoso.example", now=NOW))
    proven = cfg.with_ehr_signin(stored, upn="analyst@contoso.example", oid="oid-1", now=NOW)
    assert stored.etag is not None
    signed = repository.update(stored, proven, etag=stored.etag)
    assert repository.get(tenant, config.id).ehr_signin == proven.ehr_signin  # the proven patient URL round-trips
    assert signed.etag is not None
    repository.delete(signed, etag=signed.etag)
    for url in (ehr, myrecord):  # both released
        repository.create(cfg.new_configuration(tenant, _input(url), by="admin@contoso.example", now=NOW))
