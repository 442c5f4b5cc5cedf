"""The EHR adapter: SMART on FHIR (Epic and any SMART EHR).

Owns discovery, authorization and the token exchange (``smart``), backend-services tokens
(``backend_services``), the launch URL parameters (``launch_params``), the launch context read from
the EHR's token response (``launch_context``) and the writeback adapters: Epic's telehealth status
call (``epic_writeback``) and FHIR AuditEvent (``fhir_writeback``, ``audit_event``). Imports
``kernel``, the other adapters and the value types of ``visits.events``, ``visits.model`` and
``writeback.model``; never a domain service.
"""
