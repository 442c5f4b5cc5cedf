"""EHR writeback adapters: Epic's telehealth status call, FHIR AuditEvent, or none."""
