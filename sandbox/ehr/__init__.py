"""Sandbox EHR: an Epic-flavoured SMART App Launch 2 + FHIR R4 server with Hyperspace/MyChart stand-ins."""

from sandbox.ehr.app import EhrSandbox, create_app, sandbox_of
from sandbox.ehr.config import EhrConfig, Faults, RegisteredClient
from sandbox.ehr.launch_urls import LaunchError

__all__ = ["EhrConfig", "EhrSandbox", "Faults", "LaunchError", "RegisteredClient", "create_app", "sandbox_of"]
