"""The configuration portal: what admins and approvers do.

Owns submitting and editing configurations, the approver's EHR sign-in that proves a FHIR URL,
approval, sharing and the integration records (``service``), and portal sessions (``sessions``).
Entered through ``/api/portal/*``. Imports ``kernel``, adapters and ``configurations``.
"""
