"""The data inventory's vocabulary: what each table, queue and blob container holds, and why it may.

Every module that owns stored data declares it next to its code as ``INVENTORY``, a tuple of
``Store``: the store's name and kind, the account it lives in, every field with its classification
and protection, its lifetime and what removes it. ``tests/privacy/test_inventory.py`` gathers these
declarations, checks them against the fields the code writes, and checks the README's inventory
table against them, so the published promise cannot drift from the code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.StrEnum):
    TABLE = "table"
    QUEUE = "queue"
    BLOBS = "blob container"


class Account(enum.StrEnum):
    APP = "app"  # AzureWebJobsStorage: the app's own account, in the app's region
    GEOGRAPHY = "geography"  # STORAGE_<GEOGRAPHY>: the account of the configuration's geography


class Classification(enum.StrEnum):
    PERSONAL = "personal"  # identifies a person (a workforce identity or a Microsoft 365 account)
    EHR_ID = "EHR identifier"  # an id the EHR knows a patient, clinician or visit by
    CREDENTIAL = "secret/credential"  # grants something: a key, verifier, nonce, CSRF token, meeting link
    TENANT = "tenant metadata"  # about an organization and its configuration, not a person
    OPERATIONAL = "operational"  # keys, times, states and counters that identify nobody


class Protection(enum.StrEnum):
    SEALED = "sealed (AES-GCM)"  # authenticated encryption under SEALING_KEYS
    HMAC = "HMAC-keyed"  # one-way, keyed with CONNECTOR_SECRET or GRAPH_CLIENT_STATE
    HASHED = "SHA-256"  # one-way, unkeyed: only for random or non-identifying inputs
    CLEAR = "clear"  # not an EHR identifier; stored as is (encrypted at rest by the storage service)
    HOST = "encrypted by the Functions host"  # the host's own keys, under its own data-protection key


@dataclass(frozen=True)
class Field:
    name: str
    classification: Classification
    protection: Protection
    note: str = ""


@dataclass(frozen=True)
class Store:
    name: str  # table, queue or container name; a setting in %…% when the name is configurable
    kind: Kind
    account: Account
    purpose: str
    fields: tuple[Field, ...]
    lifetime: str
    removed_by: str

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


def key(name: str, note: str) -> Field:
    """A PartitionKey or RowKey that identifies nobody."""
    return Field(name, Classification.OPERATIONAL, Protection.CLEAR, note)


def operational(*names: str) -> tuple[Field, ...]:
    return tuple(Field(name, Classification.OPERATIONAL, Protection.CLEAR) for name in names)
