"""The configuration portal's rules: who may do what, form validation, EHR validation, records.

``connector/portal.py`` turns requests into calls on ``PortalService`` and its results into pages;
everything that decides something lives here, testable without a Functions host.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from shared.configurations import model as cfg
from shared.configurations.model import Configuration, ConfigurationInput, Environment, Vendor, WritebackMode
from shared.configurations.repository import ConfigurationRepository
from shared.ehr.smart import OAuthError, Pkce, SmartClient
from shared.ehr.vendors import PATIENT_BASE_PROOF, VendorProfile, profile_for
from shared.http.outbound import check_url, check_url_syntax, normalise_base_url
from shared.jose.keys import signing_keys_from
from shared.kernel.clock import utcnow
from shared.kernel.errors import (
    BadRequest,
    Conflict,
    ErrorPage,
    Forbidden,
    InvalidIdToken,
    NotFound,
    StateError,
    UnsafeUrl,
    UpstreamError,
    UpstreamRejected,
)
from shared.kernel.i18n import N_, Text
from shared.kernel.identifiers import log_id, random_token
from shared.kernel.settings import Geography, Settings
from shared.launch.user_map import ListedMapping, UserMapRepository
from shared.microsoft.entra import PortalIdentity
from shared.portal.sessions import PortalSession
from shared.storage.state import StateRouter

logger = logging.getLogger(__name__)
EHR_STATE_KIND = "portal-ehr-signin"
EHR_STATE_TTL = timedelta(minutes=10)
EHR_CALLBACK_PATH = "/api/portal/ehr/callback"
EHR_SIGNIN_SCOPE = "openid fhirUser"
# Patients without a portal account (Oracle Health: "join from email or SMS notifications").
JOIN_LINKS_NOTE = N_(
    "Once the clinician has launched the visit, their visit page offers the patient's join link: a signed "
    "connector URL for this one appointment, valid 12 hours, that leads to the same lobby without an account. "
    "Paste it into the EHR's email or SMS notification."
)
# FHIR versions the connector speaks (the launch's reads and the AuditEvent it writes are R4).
SUPPORTED_FHIR_VERSIONS = {"4.0": "R4"}
FHIR_RELEASES = {"1.0": "DSTU2", "3.0": "STU3", "4.0": "R4", "4.3": "R4B", "5.0": "R5", "6.0": "R6"}
MAX_ORGANIZATION = 120
_UPN_RE = re.compile(r"^[^@\s<>\"']{1,64}@[A-Za-z0-9.-]{1,189}\.[A-Za-z]{2,63}$")
_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

FIELDS = (
    "organization",
    "fhir_base_url",
    "environment",
    "approver_upn",
    "geography",
    "vendor",
    "provider_client_id",
    "patient_client_id",
    "writeback_mode",
    "patient_fhir_base_url",
)


class FormErrors(BadRequest):
    """One or more fields are invalid; ``errors`` maps field name → message in the user's words."""

    code = "invalid_form"

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__(N_("Some fields need your attention."))
        self.errors = dict(errors)


# --- who may do what ----------------------------------------------------------------------


def can_edit(user: PortalIdentity, config: Configuration) -> bool:
    return user.is_admin and user.tenant_id == config.tenant_id


def can_view(user: PortalIdentity, config: Configuration) -> bool:
    """Admins of the owning tenant, and the approver of the approved version or of the edit awaiting approval."""
    same_tenant = user.tenant_id == config.tenant_id
    return same_tenant and (user.is_admin or is_an_approver(user, config))


def is_an_approver(user: PortalIdentity, config: Configuration) -> bool:
    return config.is_approver(user.upn, user.object_id) or config.proposed.is_approver(user.upn, user.object_id)


def can_view_shared(user: PortalIdentity, config: Configuration) -> bool:
    """Admins of a tenant the configuration is shared with see it and its records, read-only."""
    return user.is_admin and config.is_shared_with(user.tenant_id)


def can_approve(user: PortalIdentity, config: Configuration) -> bool:
    """The approver named on what awaits approval (the edit's approver while an edit awaits)."""
    return user.tenant_id == config.tenant_id and config.proposed.is_approver(user.upn, user.object_id)


def require_admin(user: PortalIdentity) -> None:
    if not user.is_admin:
        raise Forbidden(
            N_(
                "Only a Global Administrator, a Teams Administrator or a user with the Connector.Admin role "
                "can add or change configurations."
            )
        )


# --- form validation ----------------------------------------------------------------------


def parse_fields(form: Mapping[str, str], geographies: tuple[Geography, ...]) -> tuple[dict[str, str], dict[str, str]]:
    """(cleaned values, errors) for one configuration's fields; the FHIR URL is only syntax-checked later."""
    values = {name: (form.get(name) or "").strip() for name in FIELDS}
    errors: dict[str, str] = {}
    organization = values["organization"]
    if not organization:
        errors["organization"] = N_("Enter the organization's name.")
    elif len(organization) > MAX_ORGANIZATION or any(ord(c) < 0x20 for c in organization):
        errors["organization"] = N_("Use up to %(count)s printable characters.", count=MAX_ORGANIZATION)
    if not values["fhir_base_url"]:
        errors["fhir_base_url"] = N_("FHIR URL isn't valid: enter the full https:// address of the FHIR server")
    _choice(values, errors, "environment", [e.value for e in Environment], N_("Choose test or production."))
    values["approver_upn"] = values["approver_upn"].lower()
    if not _UPN_RE.match(values["approver_upn"]):
        errors["approver_upn"] = N_("Enter the approver's Microsoft 365 user name, like analyst@contoso.com.")
    _choice(values, errors, "geography", [g.value for g in geographies], N_("Choose a geography offered here."))
    _choice(values, errors, "vendor", [v.value for v in Vendor], N_("Choose the EHR vendor."))
    _choice(values, errors, "writeback_mode", [w.value for w in WritebackMode], N_("Choose a writeback mode."))
    if "vendor" not in errors and "writeback_mode" not in errors:
        refusal = profile_for(values["vendor"]).writeback_refusal(WritebackMode(values["writeback_mode"]))
        if refusal is not None:
            errors["writeback_mode"] = refusal
    for name in ("provider_client_id", "patient_client_id"):
        if not _CLIENT_ID_RE.match(values[name]):
            errors[name] = N_("Enter the client id the EHR issued (letters, digits, . _ : -, up to 128).")
    return values, errors


def _choice(values: dict[str, str], errors: dict[str, str], name: str, allowed: list[str], message: str) -> None:
    values[name] = values[name].lower()
    if values[name] not in allowed:
        errors[name] = message


def to_input(values: Mapping[str, str]) -> ConfigurationInput:
    return ConfigurationInput(
        organization=values["organization"],
        fhir_base_url=values["fhir_base_url"],
        environment=Environment(values["environment"]),
        approver_upn=values["approver_upn"],
        geography=Geography(values["geography"]),
        vendor=Vendor(values["vendor"]),
        provider_client_id=values["provider_client_id"],
        patient_client_id=values["patient_client_id"],
        writeback_mode=WritebackMode(values["writeback_mode"]),
        patient_fhir_base_url=values.get("patient_fhir_base_url", ""),
    )


# --- integration records ------------------------------------------------------------------


@dataclass(frozen=True)
class IntegrationRecord:
    kind: str
    title: str
    launch_url: str
    context_tokens: str  # Epic only; empty for other vendors
    client_id: str
    scopes: str
    redirect_uris: tuple[tuple[str, str], ...] = ()  # (what it is for, URI): every one must be registered
    token_context: str = ""  # what the EHR's token response must carry
    launch_point: str = ""  # where in the EHR users press the button (the vendor's own words)
    iss: str = ""  # the FHIR base the EHR sends as ``iss`` on this launch
    group: bool = False  # a group-visit record (%CONFERENCEID%): built beside the individual ones


@dataclass(frozen=True)
class IntegrationRecords:
    configuration: Configuration
    redirect_uri: str
    jwks_url: str
    backend_scopes: str
    records: tuple[IntegrationRecord, ...] = field(default_factory=tuple)
    signing_algorithm: str = "RS384"
    shared_view: bool = False  # read by another tenant's admin: the owner's staff are not named
    approval_proof: str = ""  # what the approver's EHR sign-in proved, for this vendor
    patient_base_proof: str = ""  # what was proven of the patient-side FHIR URL, when there is one
    join_links: str = JOIN_LINKS_NOTE

    def as_text(self) -> str:
        """The plain-text export (``records.txt``): every value on its own labelled line."""
        c = self.configuration
        lines = [
            "Teams EHR Connector - integration records",
            f"Organization: {c.organization}",
            f"Environment: {c.environment.value.upper()}",
            f"FHIR base URL: {c.fhir_base_url}",
            *([f"Patient-side FHIR URL: {c.patient_fhir_base_url}"] if c.patient_fhir_base_url else []),
            f"EHR vendor: {c.vendor.label}",
            f"Configuration id: {c.id}",
        ]
        if c.approved_at is not None:
            by = "" if self.shared_view else f" by {c.approved_by}"
            lines.append(f"Approved{by} at {c.approved_at:%Y-%m-%d %H:%M} UTC")
        for record in self.records:
            lines += [
                "",
                f"[{record.title}]",
                f"Where: {record.launch_point}",
                f"Launch URL: {record.launch_url}",
                f"FHIR base URL (iss): {record.iss}",
                *([f"Context tokens: {record.context_tokens}"] if record.context_tokens else []),
                f"Client id: {record.client_id}",
                f"Scopes: {record.scopes}",
                f"Token response context: {record.token_context}",
                *(f"Redirect URI ({label}): {uri}" for label, uri in record.redirect_uris),
            ]
        lines += [
            "",
            "[Client authentication]",
            f"Method: private_key_jwt ({self.signing_algorithm}); no client secret",
            f"JWKS URL: {self.jwks_url}",
            f"Backend scopes: {self.backend_scopes}",
        ]
        if self.approval_proof:
            lines += ["", "[Approval]", f"The approver proved: {self.approval_proof}"]
            if self.patient_base_proof:
                lines.append(f"Patient-side FHIR URL: {self.patient_base_proof}")
        lines += ["", "[Email/SMS join links]", self.join_links]
        return "\n".join(lines) + "\n"


def integration_records(
    config: Configuration, public_base_url: str, *, signing_algorithm: str = "RS384"
) -> IntegrationRecords:
    """The values to enter in the EHR; ``signing_algorithm`` is the active signing key's (``SigningKeys.active``)."""
    if not config.is_approved:
        raise NotFound(N_("This configuration is not approved yet, so it has no integration records."))
    base = public_base_url.rstrip("/")
    launch_callback = (N_("launches"), f"{base}/api/launch/callback")
    profile = profile_for(config.vendor)
    backend = {
        WritebackMode.EPIC: "Epic SetExternalConnectionStatus web service (client mapped to an Epic user)",
        WritebackMode.FHIR_AUDIT_EVENT: "system/AuditEvent.write",
        WritebackMode.NONE: "none (writeback off)",
    }[config.writeback_mode]
    return IntegrationRecords(
        configuration=config,
        redirect_uri=f"{base}/api/launch/callback",
        jwks_url=f"{base}/api/.well-known/jwks.json",
        backend_scopes=backend,
        signing_algorithm=signing_algorithm,
        approval_proof=profile.approval_proof,
        patient_base_proof=PATIENT_BASE_PROOF if config.patient_fhir_base_url else "",
        records=(
            IntegrationRecord(
                kind="provider",
                title=N_("Provider launch"),
                launch_url=f"{base}/api/launch/{config.id}/provider",
                context_tokens=profile.provider_context_tokens,
                client_id=config.provider_client_id,
                scopes=profile.provider_scopes,
                token_context=profile.context_fields,
                launch_point=profile.provider_launch_point,
                iss=config.fhir_base_url,
                # The approver's EHR sign-in (``PortalService.start_ehr_signin``) uses the provider client id.
                redirect_uris=(
                    launch_callback,
                    (N_("approver's EHR sign-in in the portal"), f"{base}{EHR_CALLBACK_PATH}"),
                ),
            ),
            IntegrationRecord(
                kind="patient",
                title=N_("Patient launch"),
                launch_url=f"{base}/api/launch/{config.id}/patient",
                context_tokens=profile.patient_context_tokens,
                client_id=config.patient_client_id,
                scopes=profile.patient_scopes,
                token_context=profile.context_fields,
                launch_point=profile.patient_launch_point,
                iss=config.patient_fhir_base_url or config.fhir_base_url,
                redirect_uris=(launch_callback,),
            ),
            *_group_records(config, base, launch_callback),
        ),
    )


def _group_records(config: Configuration, base: str, launch_callback: tuple[str, str]) -> tuple[IntegrationRecord, ...]:
    """Epic's group-visit records: the same launch URLs and clients, with the conference id appended.

    Separate FDI records, as Epic's group visits need them; one meeting per conference id, each participant
    launching with their own CSN (README "Group visits, consults and interpreters").
    """
    profile = profile_for(config.vendor)
    if not profile.group_provider_context_tokens:
        return ()
    return (
        IntegrationRecord(
            kind="group-provider",
            title=N_("Group visit: provider launch"),
            launch_url=f"{base}/api/launch/{config.id}/provider",
            context_tokens=profile.group_provider_context_tokens,
            client_id=config.provider_client_id,
            scopes=profile.provider_scopes,
            token_context=profile.group_context_fields,
            launch_point=profile.provider_launch_point,
            redirect_uris=(launch_callback,),
            group=True,
        ),
        IntegrationRecord(
            kind="group-patient",
            title=N_("Group visit: patient launch"),
            launch_url=f"{base}/api/launch/{config.id}/patient",
            context_tokens=profile.group_patient_context_tokens,
            client_id=config.patient_client_id,
            scopes=profile.patient_scopes,
            token_context=profile.group_context_fields,
            launch_point=profile.patient_launch_point,
            redirect_uris=(launch_callback,),
            group=True,
        ),
    )


# --- the service --------------------------------------------------------------------------


class EhrSignInFailed(UpstreamRejected):
    """The approver's EHR sign-in did not prove the configuration's FHIR URL; ``page`` says why and what to check.

    ``ehr_error`` / ``ehr_description`` are the EHR's own OAuth ``error`` and ``error_description`` when it sent
    them, already made safe by ``sanitise_oauth_error`` (no control characters, bounded length): the analyst sees
    them on the page and they are logged with the correlation id.
    """

    page: ErrorPage

    def __init__(
        self,
        configuration_id: str,
        page: ErrorPage,
        *,
        ehr_error: str | None = None,
        ehr_description: str | None = None,
    ) -> None:
        super().__init__(page.message, system="EHR", code="ehr_signin_failed")
        self.configuration_id = configuration_id
        self.page = page
        self.ehr_error = ehr_error
        self.ehr_description = ehr_description or None


OAUTH_CHECKS = (
    N_("The provider client id on this configuration is the one the EHR issued for this environment."),
    N_("The client is activated in this EHR instance and our JWKS URL is registered for it."),
    N_("The redirect URI below is registered for the client exactly as shown."),
    N_("Your EHR user account may use this app."),
)


class PortalService:
    def __init__(
        self,
        settings: Settings,
        repository: ConfigurationRepository,
        states: StateRouter,
        smart: SmartClient,
        user_map: UserMapRepository,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.states = states
        self.smart = smart
        self.user_map = user_map

    @property
    def ehr_redirect_uri(self) -> str:
        return f"{self.settings.public_base_url}{EHR_CALLBACK_PATH}"

    # validation

    def validate_fhir_url(self, raw: str, *, client_id: str | None, vendor: VendorProfile | None = None) -> str:
        """Normalised FHIR URL that passed the URL rules, SMART discovery and the FHIR version check (R4), or
        ``UnsafeUrl`` with a reason."""
        checked = check_url(raw, self.smart.http.policy, base_url=True)
        profile = vendor or profile_for(Vendor.SMART)
        try:
            smart = self.smart.discover(checked.url, client_id=client_id, vendor=profile.vendor)
            version = self.smart.fhir_version(checked.url, headers=dict(smart.client_headers))
        except UnsafeUrl:
            raise
        except UpstreamError as exc:
            raise UnsafeUrl(_lower_first(exc.message)) from None
        release = ".".join(version.split(".")[:2])
        if release not in SUPPORTED_FHIR_VERSIONS:
            named = FHIR_RELEASES.get(release)
            served = f"FHIR {version}" + (f" ({named})" if named else "")
            supported = ", ".join(f"{name} ({v}.x)" for v, name in SUPPORTED_FHIR_VERSIONS.items())
            message = N_(
                "it serves %(served)s; the connector supports %(supported)s only", served=served, supported=supported
            )
            raise UnsafeUrl(message)
        return checked.url

    def validate_patient_fhir_url(
        self, raw: str, *, fhir_base_url: str, client_id: str | None, vendor: VendorProfile
    ) -> str:
        """Normalised patient-side FHIR URL (Oracle Health), checked like the FHIR URL (outbound rules, SMART
        discovery with ``private_key_jwt`` for the patient client, R4) and as a root of the same tenant; or
        ``UnsafeUrl`` with a reason. What it proves is ``PATIENT_BASE_PROOF`` (no patient signs in here)."""
        if not vendor.patient_fhir_base:  # before any request leaves: nothing to check against
            raise UnsafeUrl(vendor.patient_fhir_base_refusal(fhir_base_url, raw) or "")
        syntax = check_url_syntax(raw, self.smart.http.policy, base_url=True)
        refusal = vendor.patient_fhir_base_refusal(normalise_base_url(fhir_base_url), syntax.url)
        if refusal is not None:
            raise UnsafeUrl(refusal)
        return self.validate_fhir_url(syntax.url, client_id=client_id, vendor=vendor)

    def validated_input(self, form: Mapping[str, str]) -> ConfigurationInput:
        values, errors = parse_fields(form, self.settings.geographies)
        if "fhir_base_url" not in errors:
            try:
                values["fhir_base_url"] = self.validate_fhir_url(
                    values["fhir_base_url"],
                    client_id=values["provider_client_id"] or None,
                    vendor=profile_for(values["vendor"]) if "vendor" not in errors else None,
                )
            except UnsafeUrl as exc:
                errors["fhir_base_url"] = N_("FHIR URL isn't valid: %(reason)s", reason=exc.message)
        if values["patient_fhir_base_url"] and not {"fhir_base_url", "vendor"} & errors.keys():
            try:
                values["patient_fhir_base_url"] = self.validate_patient_fhir_url(
                    values["patient_fhir_base_url"],
                    fhir_base_url=values["fhir_base_url"],
                    client_id=values["patient_client_id"] or None,
                    vendor=profile_for(values["vendor"]),
                )
            except UnsafeUrl as exc:
                errors["patient_fhir_base_url"] = N_(
                    "Patient-side FHIR URL isn't valid: %(reason)s", reason=exc.message
                )
        if errors:
            raise FormErrors(errors)
        return to_input(values)

    def validate_rows(self, rows: Sequence[Mapping[str, str]]) -> tuple[list[ConfigurationInput], list[dict[str, str]]]:
        """Validate several configurations of one form: (inputs, errors per row); a URL may appear once."""
        inputs: list[ConfigurationInput] = []
        errors: list[dict[str, str]] = []
        for row in rows:
            try:
                inputs.append(self.validated_input(row))
                errors.append({})
            except FormErrors as exc:
                errors.append(exc.errors)
        # Every URL once: a patient-side FHIR URL is reserved like a FHIR URL, so it may not repeat either.
        urls = [url for data in inputs for url in (data.fhir_base_url, data.patient_fhir_base_url) if url]
        if not any(errors) and len(set(urls)) != len(urls):
            errors = [_repeated(data, urls) for data in inputs]
        return inputs, errors

    # configurations

    def visible_configurations(self, user: PortalIdentity) -> list[Configuration]:
        if user.is_admin:
            return self.repository.list_for_tenant(user.tenant_id)
        named = self.repository.list_for_approver(user.tenant_id, user.upn)
        return [config for config in named if is_an_approver(user, config)]

    def bind_approver(self, user: PortalIdentity) -> None:
        """At sign-in: bind each configuration naming the user, and bound to nobody yet, to their object id.

        One query per sign-in. A configuration bound to another object id stays theirs (the name changed
        hands) and is logged; a concurrent edit wins, and the binding then happens on the next sign-in or
        at the approver's EHR sign-in.
        """
        for config in self.repository.list_for_approver(user.tenant_id, user.upn):
            bound = cfg.bound_approver(config, upn=user.upn, oid=user.object_id)
            if bound != config:
                try:
                    self.repository.update(config, bound, etag=str(config.etag))
                except Conflict:
                    continue
                _audit("bound to its approver's object id", config, user)
            elif not is_an_approver(user, config):
                logger.warning(
                    "Configuration %s names user %s's user name but is bound to another object id; not their approver",
                    config.id,
                    log_id(user.object_id),
                )

    def get_visible(self, user: PortalIdentity, configuration_id: str) -> Configuration:
        """A configuration the user may see; anything else (incl. other tenants') is ``NotFound``."""
        config = self.repository.get(user.tenant_id, configuration_id)
        if not can_view(user, config):
            raise NotFound(N_("There is no such configuration."))
        return config

    def shared_configurations(self, user: PortalIdentity) -> list[Configuration]:
        """Configurations other tenants share with the user's tenant (admins only)."""
        return self.repository.list_shared_with(user.tenant_id) if user.is_admin else []

    def get_viewable(self, user: PortalIdentity, configuration_id: str) -> Configuration:
        """Like ``get_visible``, plus configurations shared with the admin's tenant (to read, never to change)."""
        try:
            return self.get_visible(user, configuration_id)
        except NotFound:
            if not user.is_admin:
                raise
        config = self.repository.get_shared(user.tenant_id, configuration_id)
        if not can_view_shared(user, config):
            raise NotFound(N_("There is no such configuration."))
        return config

    def create(self, user: PortalIdentity, data: ConfigurationInput) -> Configuration:
        require_admin(user)
        config = self.repository.create(cfg.new_configuration(user.tenant_id, data, by=user.upn, now=utcnow()))
        _audit("created", config, user)
        return config

    def update(self, user: PortalIdentity, configuration_id: str, data: ConfigurationInput, etag: str) -> Configuration:
        """Save an edit: a pending configuration changes; an approved one stays live and the edit awaits approval."""
        require_admin(user)
        current = self.get_visible(user, configuration_id)
        updated = cfg.edited(current, data, by=user.upn, now=utcnow())
        self.smart.forget(current.proposed.fhir_base_url)
        saved = self.repository.update(current, updated, etag=etag)
        if not saved.is_approved:
            action = "edited (pending approval)"
        elif saved.edit is not None:
            action = "edited; the edit awaits approval, the approved version stays in use"
        else:
            action = "edited back to its approved version; nothing awaits approval"
        _audit(action, saved, user)
        return saved

    def discard_edit(self, user: PortalIdentity, configuration_id: str, etag: str) -> Configuration:
        """Reject (the approver) or withdraw (an admin of its tenant) the edit awaiting approval.

        The approved version stays as it was, launches never noticed; the edited URL is released.
        """
        current = self.get_visible(user, configuration_id)
        if not (can_edit(user, current) or can_approve(user, current)):
            raise Forbidden(N_("Only the approver named on this edit or an administrator can reject or withdraw it."))
        saved = self.repository.update(current, cfg.edit_discarded(current), etag=etag)
        _audit("edit withdrawn" if can_edit(user, current) else "edit rejected", saved, user)
        return saved

    def delete(self, user: PortalIdentity, configuration_id: str, etag: str) -> Configuration:
        require_admin(user)
        current = self.get_visible(user, configuration_id)
        self.repository.delete(current, etag=etag)
        # The clinicians' links go with it: deleted first, the configuration admits no new link meanwhile.
        removed = self.user_map.delete_configuration(current.geography, current.id)
        _audit(f"deleted (with {removed} clinician links)", current, user)
        return current

    # sharing

    def share(self, user: PortalIdentity, configuration_id: str, tenant_id: str) -> Configuration:
        require_admin(user)
        current = self.get_visible(user, configuration_id)
        updated = cfg.shared(current, tenant_id, allowed_tenants=self.settings.entra_allowed_tenant_ids)
        saved = self.repository.update(current, updated, etag=str(current.etag))
        _audit(f"shared with tenant {updated.shared_with[-1]}", saved, user)
        return saved

    def unshare(self, user: PortalIdentity, configuration_id: str, tenant_id: str) -> Configuration:
        require_admin(user)
        current = self.get_visible(user, configuration_id)
        updated = cfg.unshared(current, tenant_id)
        saved = self.repository.update(current, updated, etag=str(current.etag))
        _audit(f"no longer shared with tenant {tenant_id.strip().lower()}", saved, user)
        return saved

    # clinician links (EHR user → Microsoft 365 user)

    def owned_for_links(self, user: PortalIdentity, configuration_id: str) -> Configuration:
        """The configuration whose clinician links ``user`` may see: only its owning tenant's admins may."""
        require_admin(user)
        config = self.get_visible(user, configuration_id)  # another tenant's (even shared) → NotFound
        if not can_edit(user, config):
            raise Forbidden(N_("Only administrators of the organization that owns this configuration see its links."))
        return config

    def mappings(self, user: PortalIdentity, configuration_id: str) -> tuple[Configuration, list[ListedMapping]]:
        config = self.owned_for_links(user, configuration_id)
        return config, self.user_map.list_for_configuration(config.geography, config.id)

    def remove_mapping(self, user: PortalIdentity, configuration_id: str, key: str) -> Configuration:
        """Remove one link; its clinician confirms a new one at their next launch."""
        config = self.owned_for_links(user, configuration_id)
        self.user_map.delete_key(config.geography, config.id, key)
        _audit(f"clinician link {log_id(key)} removed", config, user)
        return config

    # approval

    def start_ehr_signin(self, session: PortalSession, configuration_id: str) -> str:
        """URL of the EHR's authorize endpoint for a standalone SMART launch that proves the FHIR URL."""
        user = session.user
        stored = self.get_visible(user, configuration_id)
        if not can_approve(user, stored):
            raise Forbidden(N_("Only the approver named on this configuration can sign in to the EHR for it."))
        if not stored.awaits_approval:
            raise BadRequest(N_("This configuration is already approved."))
        config = stored.proposed  # the version awaiting approval: its URL and client are the ones to prove
        try:
            smart_config = self.smart.discover(
                config.fhir_base_url, client_id=config.provider_client_id, vendor=config.vendor
            )
        except (UnsafeUrl, UpstreamError) as exc:
            raise EhrSignInFailed(
                config.id,
                ErrorPage(
                    title=N_("The EHR could not be reached"),
                    message=N_("FHIR URL isn't valid: %(reason)s", reason=_lower_first(exc.message)),
                    help=(N_("The FHIR base URL is the one your EHR technical specialist gave you."),),
                ),
            ) from None
        pkce, nonce = Pkce.new(), random_token()
        state = self.states.create(
            EHR_STATE_KIND,
            {
                "configurationId": config.id,
                "tenantId": config.tenant_id,
                "fhirBaseUrl": config.fhir_base_url,
                "clientId": config.provider_client_id,
                "codeVerifier": pkce.verifier,
                "nonce": nonce,
                "session": session.binding,
                "oid": user.object_id,
            },
            ttl=EHR_STATE_TTL,
        )
        return self.smart.authorize_url(
            smart_config,
            client_id=config.provider_client_id,
            redirect_uri=self.ehr_redirect_uri,
            scope=EHR_SIGNIN_SCOPE,
            state=state,
            pkce=pkce,
            nonce=nonce,
        )

    def complete_ehr_signin(self, session: PortalSession, query: Mapping[str, str]) -> Configuration:
        """Redeem the EHR's code; a valid id_token proves the URL and is recorded (no token is kept)."""
        payload = self.states.consume(EHR_STATE_KIND, query.get("state", ""))
        user = session.user
        if payload.get("session") != session.binding or payload.get("oid") != user.object_id:
            raise StateError(N_("This EHR sign-in was started in another browser session. Please start again."))
        stored = self.get_visible(user, str(payload["configurationId"]))
        config = stored.proposed
        if config.fhir_base_url != payload["fhirBaseUrl"] or config.provider_client_id != payload["clientId"]:
            raise StateError(N_("The configuration changed during the EHR sign-in. Please sign in to the EHR again."))
        if query.get("error"):
            raise _oauth_failure(config.id, OAuthError(query["error"], query.get("error_description")))
        code = query.get("code")
        if not code:
            raise StateError(N_("The EHR's answer had no authorization code. Please start again."))
        try:
            smart_config = self.smart.discover(
                config.fhir_base_url, client_id=config.provider_client_id, vendor=config.vendor
            )
            tokens = self.smart.exchange_code(
                smart_config,
                client_id=config.provider_client_id,
                code=code,
                redirect_uri=self.ehr_redirect_uri,
                code_verifier=str(payload["codeVerifier"]),
            )
            if tokens.id_token is None:
                raise InvalidIdToken("the EHR returned no id_token (is the openid scope allowed?)")
            self.smart.validate_id_token(
                smart_config, tokens.id_token, client_id=config.provider_client_id, nonce=str(payload["nonce"])
            )
        except OAuthError as exc:
            raise _oauth_failure(config.id, exc) from None
        except InvalidIdToken as exc:
            raise EhrSignInFailed(
                config.id,
                ErrorPage(
                    title=N_("The EHR's sign-in could not be verified"),
                    message=N_("The EHR's id_token is not valid: %(reason)s.", reason=exc.reason),
                    help=(N_("The EHR publishes its signing keys (jwks_uri or OpenID configuration)."),),
                ),
            ) from None
        except (UnsafeUrl, UpstreamError) as exc:
            raise EhrSignInFailed(
                config.id,
                ErrorPage(
                    title=N_("The EHR could not complete the sign-in"),
                    message=exc.message,
                    help=(N_("The EHR's token endpoint is reachable from the connector."),),
                ),
            ) from None
        if config.patient_fhir_base_url:
            self._recheck_patient_fhir_url(config)
        proven = cfg.with_ehr_signin(stored, upn=user.upn, oid=user.object_id, now=utcnow())
        saved = self.repository.update(stored, proven, etag=str(stored.etag))
        _audit("proven by EHR sign-in", saved, user)
        return saved

    def _recheck_patient_fhir_url(self, config: Configuration) -> None:
        """Check the patient-side FHIR URL again as the sign-in is recorded: the sign-in proves it as it is now."""
        self.smart.forget(config.patient_fhir_base_url)
        try:
            self.validate_patient_fhir_url(
                config.patient_fhir_base_url,
                fhir_base_url=config.fhir_base_url,
                client_id=config.patient_client_id,
                vendor=profile_for(config.vendor),
            )
        except UnsafeUrl as exc:
            raise EhrSignInFailed(
                config.id,
                ErrorPage(
                    title=N_("The patient-side FHIR URL could not be proven"),
                    message=N_("Patient-side FHIR URL isn't valid: %(reason)s", reason=exc.message),
                    help=(
                        N_(
                            "Your EHR sign-in worked; the patient-side FHIR URL is the tenant's patient-access "
                            "service root, which must answer SMART discovery for the patient client id and serve "
                            "FHIR R4."
                        ),
                    ),
                ),
            ) from None

    def approve(self, user: PortalIdentity, configuration_id: str) -> Configuration:
        config = self.get_visible(user, configuration_id)
        if not can_approve(user, config):
            raise Forbidden(N_("Only the approver named on this configuration can approve it."))
        result = cfg.approved(config, upn=user.upn, oid=user.object_id, now=utcnow())
        saved = self.repository.update(config, result, etag=str(config.etag))
        _audit("edit approved (now in use)" if config.is_approved else "approved", saved, user)
        if config.is_approved and saved.geography != config.geography:
            # Launches now keep links in the new geography: the old one's are used by nothing and may not stay.
            removed = self.user_map.delete_configuration(config.geography, config.id)
            _audit(f"moved geography (its {removed} clinician links in the old one removed)", saved, user)
        return saved

    def records(self, user: PortalIdentity, configuration_id: str) -> IntegrationRecords:
        config = self.get_viewable(user, configuration_id)
        algorithm = signing_keys_from(self.settings.signing_keys.reveal()).active.algorithm
        records = integration_records(config, self.settings.public_base_url, signing_algorithm=algorithm)
        return replace(records, shared_view=config.tenant_id != user.tenant_id)


def _repeated(data: ConfigurationInput, urls: list[str]) -> dict[str, str]:
    """The errors of one row whose URLs appear more than once among ``urls`` (every row's URLs)."""
    errors: dict[str, str] = {}
    if urls.count(data.fhir_base_url) > 1:
        errors["fhir_base_url"] = N_("This FHIR URL appears twice in this form.")
    if data.patient_fhir_base_url and urls.count(data.patient_fhir_base_url) > 1:
        errors["patient_fhir_base_url"] = N_("This URL appears twice in this form.")
    return errors


def _audit(action: str, config: Configuration, user: PortalIdentity) -> None:
    # Ids only: the configuration id is tenant metadata; the user appears as a fingerprint of their object id.
    who = log_id(user.object_id)
    logger.info("Configuration %s %s by user %s (tenant %s)", config.id, action, who, config.tenant_id)


def _oauth_failure(configuration_id: str, exc: OAuthError) -> EhrSignInFailed:
    """The page for an OAuth error answer; the code is in the message whatever the description holds."""
    page = ErrorPage(
        title=N_("The EHR refused the sign-in"),
        message=N_("OAuth2 error from the EHR: %(error)s", error=exc.error),
        help=OAUTH_CHECKS,
    )
    return EhrSignInFailed(configuration_id, page, ehr_error=exc.error, ehr_description=exc.description)


def _lower_first(text: str) -> str:
    """ "The EHR did not answer." → "the EHR did not answer" (to follow "FHIR URL isn't valid: "); "EHR ..." stays.

    Marked text stays as it is: it is translated whole, as a sentence of its own.
    """
    if isinstance(text, Text):
        return text
    text = text.rstrip(".")
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def describe(values: Mapping[str, Any]) -> dict[str, str]:
    """Form values as strings for re-rendering a form (never None)."""
    return {name: str(values.get(name) or "") for name in FIELDS}
