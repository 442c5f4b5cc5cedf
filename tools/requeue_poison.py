"""Move poison messages back onto their queue once the cause is fixed.

    python -m tools.requeue_poison                       # %WRITEBACK_QUEUE_NAME%-poison → its queue
    python -m tools.requeue_poison --queue writeback-events --limit 100 --dry-run

Reads settings like the app (environment, or ``--settings local.settings.json``). Each message is
sent to the queue first and deleted from the poison queue after, so a crash in between can only
duplicate a message, never lose one — and the worker's ledger completes a duplicate of a written event
without calling the EHR.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from shared.storage.accounts import Storage, StorageAccount

BATCH = 32


@dataclass
class Requeued:
    moved: int = 0
    seen: int = 0


def requeue(account: StorageAccount, queue_name: str, *, limit: int | None = None, dry_run: bool = False) -> Requeued:
    """Move up to ``limit`` messages from ``<queue_name>-poison`` to ``queue_name``."""
    target = account.queue(queue_name)
    account.queue(f"{queue_name}-poison")  # exists from here on
    # Read the poison queue raw: the host moves undecodable messages there as they were.
    poison = account.queue_service().get_queue_client(f"{queue_name}-poison")
    result = Requeued()
    # Only what is there now: a message that fails again while we run returns to the poison queue and waits.
    result.seen = poison.get_queue_properties().approximate_message_count or 0  # None: the header was missing
    budget = result.seen if limit is None else min(limit, result.seen)
    if dry_run:
        return result
    while result.moved < budget:
        batch = list(poison.receive_messages(messages_per_page=BATCH, max_messages=BATCH, visibility_timeout=60))
        if not batch:
            break
        for message in batch:
            if result.moved >= budget:
                poison.update_message(message, visibility_timeout=0)  # leave it for next time
                continue
            target.send_message(_body(message.content))
            poison.delete_message(message)
            result.moved += 1
    return result


def _body(content: str) -> str:
    """The message text: poison messages are stored base64-encoded (the queue extension's encoding);
    the client's encode policy encodes it again on the way back. A message that was never valid
    base64 goes back as its raw text, now encoded, so the host can at least decode it this time."""
    try:
        return base64.b64decode(content, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return content


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.requeue_poison", description=__doc__.splitlines()[0])
    parser.add_argument("--queue", help="queue name (default: WRITEBACK_QUEUE_NAME)")
    parser.add_argument("--limit", type=int, help="move at most this many messages")
    parser.add_argument("--dry-run", action="store_true", help="only count the poison messages")
    parser.add_argument("--settings", type=Path, help="a local.settings.json to read settings from")
    args = parser.parse_args(argv)
    if args.settings:
        for key, value in json.loads(args.settings.read_text())["Values"].items():
            os.environ.setdefault(key, value)
    from shared.kernel.settings import get_settings

    settings = get_settings()
    queue_name = args.queue or settings.writeback_queue_name
    result = requeue(Storage(settings).app, queue_name, limit=args.limit, dry_run=args.dry_run)
    if args.dry_run:
        print(f"About {result.seen} message(s) waiting in {queue_name}-poison")
    else:
        print(f"Moved {result.moved} message(s) from {queue_name}-poison back to {queue_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
