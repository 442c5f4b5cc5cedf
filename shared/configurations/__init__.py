"""Configurations: the FHIR base URLs a Microsoft 365 admin submits for approval.

Owns the configuration, its lifecycle (pending, proven by an EHR sign-in, approved, shared) as pure
functions (``model``) and its Table rows with the URL index and share index (``repository``).
Entered through the portal routes; read by launch and writeback. Imports ``kernel`` and adapters.
"""
