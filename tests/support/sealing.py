"""The sealer a test's settings give the app (each sandbox environment generates its own SEALING_KEYS)."""

from __future__ import annotations

from shared.kernel.sealing import Sealer
from shared.kernel.settings import Settings


def sealer_for(settings: Settings) -> Sealer:
    return Sealer.from_text(settings.sealing_keys.reveal())
