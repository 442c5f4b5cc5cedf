"""Function keys: a master key and host-level function keys, kept in a local JSON file.

The real host keeps its secrets in blob storage; locally they live in
``.sandbox/host-keys.json``, generated with random values on first run::

    {"masterKey": "...", "functionKeys": {"default": "..."}, "functions": {"<name>": {"default": "..."}}}

A FUNCTION-level route accepts the function's own keys, any host function key or the master
key; an ADMIN-level route accepts only the master key (as in Azure).
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

ANONYMOUS = "ANONYMOUS"
FUNCTION = "FUNCTION"
ADMIN = "ADMIN"


def new_key() -> str:
    """A key shaped like the host's (56 URL-safe characters)."""
    return secrets.token_urlsafe(42)


@dataclass(frozen=True)
class HostKeys:
    master_key: str
    function_keys: dict[str, str]
    functions: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def default_function_key(self) -> str:
        return self.function_keys["default"]

    @classmethod
    def generate(cls) -> HostKeys:
        return cls(master_key=new_key(), function_keys={"default": new_key()})

    @classmethod
    def load_or_create(cls, path: Path) -> HostKeys:
        if path.exists():
            data = json.loads(path.read_text())
            keys = cls(
                master_key=str(data["masterKey"]),
                function_keys={str(k): str(v) for k, v in (data.get("functionKeys") or {}).items()},
                functions={
                    str(name): {str(k): str(v) for k, v in values.items()}
                    for name, values in (data.get("functions") or {}).items()
                },
            )
            if "default" not in keys.function_keys:
                raise ValueError(f"{path} has no functionKeys.default")
            return keys
        keys = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(keys.to_json(), indent=2) + "\n")
        path.chmod(0o600)
        return keys

    def to_json(self) -> dict[str, object]:
        return {"masterKey": self.master_key, "functionKeys": self.function_keys, "functions": self.functions}

    def authorizes(self, auth_level: str, function_name: str, supplied: str | None) -> bool:
        """Whether ``supplied`` (from ``x-functions-key`` or ``code``) opens a route of ``auth_level``."""
        level = auth_level.upper()
        if level == ANONYMOUS:
            return True
        if not supplied:
            return False
        accepted = [self.master_key]
        if level == FUNCTION:
            accepted += list(self.function_keys.values())
            accepted += list(self.functions.get(function_name, {}).values())
        elif level != ADMIN:
            return False
        # Compare against every key so timing does not reveal which one nearly matched.
        matches = [hmac.compare_digest(supplied.encode(), key.encode()) for key in accepted]
        return any(matches)
