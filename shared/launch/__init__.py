"""Launches: "Begin virtual visit" from the EHR to the Teams meeting.

Owns the provider and patient launch flows — SMART launch, Microsoft 365 sign-in for providers,
one meeting per appointment, the lobby for patients — (``service``) and the one durable personal
datum, the EHR user to Microsoft 365 user mapping (``user_map``). Entered through ``/api/launch/*``.
Imports ``kernel``, adapters, ``configurations`` and ``visits``.
"""
