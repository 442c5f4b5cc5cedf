"""The configuration portal: what admins and approvers do.

Owns submitting and editing configurations, the approver's EHR sign-in that proves a FHIR URL,
approval, sharing, the integration records and the list of a configuration's clinician links
(``service``), and portal sessions (``sessions``). Entered through ``/api/portal/*``. Imports
``kernel``, adapters, ``configurations`` and the link table of ``launch`` (``launch.user_map``).
"""
