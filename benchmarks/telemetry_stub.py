"""An Application Insights ingestion stub on 127.0.0.1, so a benchmark can turn telemetry export on.

It accepts what the Azure Monitor exporter sends (``POST /v2.1/track``: a JSON array, or JSON lines,
optionally gzipped) and answers as the service does (``itemsReceived`` / ``itemsAccepted``), counting the
items by type; Live Metrics' pings get "not subscribed", as when no one watches the portal's live view.
``connection_string`` points the exporter at it (``IngestionEndpoint`` and ``LiveEndpoint``).
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INSTRUMENTATION_KEY = "00000000-0000-4000-8000-000000000000"


class TelemetryStub:
    def __init__(self) -> None:
        self.items: Counter[str] = Counter()
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                if "track" in self.path:
                    received = stub._count(body)
                    reply = json.dumps({"itemsReceived": received, "itemsAccepted": received, "errors": []})
                    self._answer(200, reply.encode(), {"content-type": "application/json"})
                else:  # Live Metrics (QuickPulse): no one is watching
                    self._answer(200, b"", {"x-ms-qps-subscribed": "false"})

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="telemetry-stub", daemon=True)

    def _count(self, body: bytes) -> int:
        text = body.decode("utf-8", "replace").strip()
        try:
            parsed = json.loads(text)
            envelopes = parsed if isinstance(parsed, list) else [parsed]
        except ValueError:
            envelopes = [json.loads(line) for line in text.splitlines() if line.strip()]
        with self._lock:
            for envelope in envelopes:
                name = str(envelope.get("name", "?")) if isinstance(envelope, dict) else "?"
                self.items[name.rsplit(".", 1)[-1]] += 1
        return len(envelopes)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    @property
    def connection_string(self) -> str:
        return f"InstrumentationKey={INSTRUMENTATION_KEY};IngestionEndpoint={self.url};LiveEndpoint={self.url}"

    def take(self) -> Counter[str]:
        with self._lock:
            items, self.items = self.items, Counter()
        return items

    def __enter__(self) -> TelemetryStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
