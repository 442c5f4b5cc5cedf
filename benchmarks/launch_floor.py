"""The floor of a warm launch: the work no launch can avoid, done with the same libraries, in a process of its own.

    python -m benchmarks.launch_floor --token-url URL --client-id ID --visit GEOGRAPHY PK RK --organizer OID
        --tenant TENANT [--runs 50 | --serve]

Run by ``benchmarks.launch`` as a child process with the app's settings in its environment, during the same
run as the launches it is compared with. Per run, each step once:

* token POST: a ``private_key_jwt`` client assertion signed with ``SIGNING_KEYS`` (``shared.jose.keys``),
  posted as a form through the checked transport (``SafeHttp``) to the EHR's token endpoint, JSON answer read;
* id_token check: an RS256 id_token's signature and claims (``shared.jose.id_tokens``, PyJWT);
* one Table point read (azure-data-tables, the app's storage transport);
* createOrGet of a meeting through the Graph adapter (msgraph-core's client, app-only token kept);
* a small page rendered by the app's Jinja2 environment.

And, outside that floor (the issue that set it leaves it out), what a launch must also do for its writeback: one
queue message (the launch event) sent with azure-storage-queue, as the host's queue output does.

Prints one JSON line: CPU milliseconds per run, per step and in total, and the extra step apart
(``time.process_time``, after a warm-up). With ``--serve`` it stays up after the warm-up and answers each line
``run N`` on stdin with such a line for N more runs (``quit`` ends it), so ``benchmarks.launch`` can measure the
floor in many short rounds between its launches without starting a process each time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.launch_floor")
    parser.add_argument("--token-url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--visit", nargs=3, metavar=("GEOGRAPHY", "PK", "RK"), required=True)
    parser.add_argument("--organizer", required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--serve", action="store_true", help="after the warm-up, answer 'run N' lines on stdin")
    args = parser.parse_args(argv)

    from connector.web import templates
    from shared.http.outbound import SafeHttp, outbound_policy
    from shared.jose.id_tokens import validate_id_token
    from shared.jose.keys import CLIENT_ASSERTION_TYPE, signing_keys_from
    from shared.kernel.settings import Geography, get_settings
    from shared.microsoft.app_credentials import AppOnlyCredentials
    from shared.microsoft.teams import TeamsClient
    from shared.storage.accounts import Storage

    settings = get_settings()
    policy = outbound_policy(settings)
    http = SafeHttp(policy)
    keys = signing_keys_from(settings.signing_keys.reveal())
    table = Storage(settings).for_geography(Geography(args.visit[0])).table("Visits")
    credentials = AppOnlyCredentials(
        settings.entra_authority_host,
        settings.entra_client_id,
        settings.entra_client_secret.reveal(),
        http=SafeHttp(policy, system="Microsoft Entra ID"),
    )
    teams = TeamsClient(settings.graph_base_url, credentials.for_tenant(args.tenant), policy=policy)
    issuer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = jwt.PyJWK.from_dict(json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(issuer_key.public_key())), "RS256")
    issuer = "https://ehr.example/oauth2"

    def token_post() -> None:
        form = {
            "grant_type": "authorization_code",
            "code": "not-a-code",
            "redirect_uri": "https://connector.example/api/launch/callback",
            "code_verifier": "v" * 43,
            "client_id": args.client_id,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": keys.client_assertion(args.client_id, args.token_url),
        }
        result = http.post_form(args.token_url, form, headers={"Accept": "application/json"})
        result.json()

    def id_token_check() -> None:
        now = int(time.time())
        claims = {"iss": issuer, "aud": "client", "sub": "p", "exp": now + 300, "iat": now, "nonce": "n"}
        token = jwt.encode(claims, issuer_key, algorithm="RS256", headers={"kid": "k"})  # the EHR's work, untimed
        started = time.process_time()
        validate_id_token(token, keys_for=lambda kid, alg: [public], issuer=issuer, audience="client", nonce="n")
        spent[0] += time.process_time() - started

    def table_read() -> None:
        table.get_entity(args.visit[1], args.visit[2])

    def create_or_get() -> None:
        start = datetime.now(UTC)
        teams.create_or_get_meeting(
            organizer_object_id=args.organizer,
            external_id="launch-floor",
            subject="Virtual visit",
            start=start,
            end=start + timedelta(hours=1),
        )

    def page() -> None:
        templates().get_template("launch/declined.html").render(title="Not linked")

    queue = Storage(settings).app.queue(f"launch-floor-{uuid.uuid4().hex[:12]}")
    event = json.dumps({"v": 1, "kind": "connected", "sealed": "s1." + "x" * 300})

    def queue_message() -> None:
        queue.send_message(event)

    spent = [0.0]
    steps: dict[str, Callable[[], None]] = {
        "token POST": token_post,
        "id_token check": id_token_check,
        "Table point read": table_read,
        "createOrGet": create_or_get,
        "small page": page,
    }
    extras: dict[str, Callable[[], None]] = {"queue message (the launch event)": queue_message}
    for step in (*steps.values(), *extras.values()):  # warm-up: connections, the app-only token, compiled templates
        for _ in range(3):
            step()

    def measure(runs: int) -> dict[str, object]:
        figures: dict[str, float] = {}
        for name, step in steps.items():
            if name == "id_token check":
                spent[0] = 0.0
                for _ in range(runs):
                    step()
                figures[name] = spent[0] / runs * 1000
                continue
            started = time.process_time()
            for _ in range(runs):
                step()
            figures[name] = (time.process_time() - started) / runs * 1000
        extra: dict[str, float] = {}
        for name, step in extras.items():
            started = time.process_time()
            for _ in range(runs):
                step()
            extra[name] = (time.process_time() - started) / runs * 1000
        return {"runs": runs, "steps_ms": figures, "total_ms": sum(figures.values()), "extras_ms": extra}

    try:
        if not args.serve:
            print(json.dumps(measure(args.runs)))
            return 0
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            command = line.split()
            if command[:1] == ["quit"]:
                break
            if len(command) != 2 or command[0] != "run" or not command[1].isdigit() or int(command[1]) < 1:
                print(json.dumps({"error": f"unknown command {line.strip()!r}"}), flush=True)
                continue
            print(json.dumps(measure(int(command[1]))), flush=True)
        return 0
    finally:
        queue.delete_queue()


if __name__ == "__main__":
    sys.exit(main())
