"""``python -m sandbox.host``: run the function app in the current directory like ``func start``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from sandbox.host.config import HostConfigurationError, read_local_settings
from sandbox.host.localhost import LocalHost

DEFAULT_KEYS = Path(".sandbox") / "host-keys.json"
logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.host", description=__doc__)
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--settings", type=Path, default=Path("local.settings.json"))
    parser.add_argument("--app", default="function_app", help="module that defines the FunctionApp")
    parser.add_argument("--app-dir", type=Path, default=Path.cwd(), help="function app root (host.json)")
    parser.add_argument("--keys", type=Path, default=None, help="keys file (default .sandbox/host-keys.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", stream=sys.stdout)

    app_dir = args.app_dir.resolve()
    settings = read_local_settings(args.settings) if args.settings.exists() else {}
    if not args.settings.exists():
        logger.warning("%s not found; using the environment only", args.settings)
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        host = LocalHost(
            args.app,
            settings,
            port=args.port,
            app_dir=app_dir,
            keys_path=args.keys or app_dir / DEFAULT_KEYS,
            display_host="localhost",
        )
        host.start()
    except HostConfigurationError as exc:
        logger.error("The host could not start: %s", exc)
        return 1
    except Exception:
        # Like the real host: an app that fails to import or a busy port is reported, with its trace.
        logger.exception("The host could not start")
        return 1
    logger.info("Host started on %s (keys in %s). Press Ctrl+C to stop.", host.url, args.keys or DEFAULT_KEYS)
    try:
        stop.wait()
    finally:
        logger.info("Stopping the host…")
        host.stop()
        logger.info("Host stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
