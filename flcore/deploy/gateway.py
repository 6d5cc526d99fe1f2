"""The Fleet gateway: the coordinator's public port, serving the SuperNodes' Fleet API and nothing else.

Flower 1.41 serves its Fleet, Control and Runtime APIs on **one** HTTPS port, and its
Control API has no user authentication in the open-source release: whoever reaches the
port can list and stop runs, and register a SuperNode key of their own. So the
coordinator service (:mod:`flcore.deploy.coordinator`) binds the SuperLink to loopback
only and puts this gateway on the public address. The gateway terminates TLS with the
SuperLink's own certificate, passes ``POST /v1/fleet/...`` calls to the SuperLink on
loopback (TLS again, checked against the pilot CA) with their headers unchanged, so the
SuperLink still checks every SuperNode's signature itself, and answers 403 to every other
path. When the SuperLink is down (a restart) it answers 503, which Flower's SuperNodes
retry with back-off.

It is a Starlette app served by uvicorn, forwarding with httpx: the three libraries Flower
itself serves and calls its HTTP APIs with, so the gateway adds no dependency. A
reverse proxy (nginx, HAProxy) allowing only ``/v1/fleet/`` does the same job where an
operator prefers one (docs/deploy.md).

Run as ``python -m flcore.deploy.gateway --listen HOST:PORT --upstream 127.0.0.1:PORT
[--certfile F --keyfile F --ca F | --insecure]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

#: The only path prefix the gateway forwards: Flower's Fleet API (``flwr/superlink/routers/fleet/router.py``).
FLEET_PREFIX = "/v1/fleet/"
#: Answer to anything else.
REFUSAL = (
    "flsuite Fleet gateway: only the Fleet API (POST /v1/fleet/...) is served on this address. "
    "The Control API listens on the coordinator's loopback address only.\n"
)
#: Headers that describe one hop, not the request: httpx and uvicorn set their own.
_HOP_HEADERS = frozenset(
    {"host", "connection", "keep-alive", "content-length", "transfer-encoding", "upgrade", "te", "trailer"}
)
#: A SuperNode's request to start its session; Flower refuses it with one message whatever the cause.
ACTIVATE = FLEET_PREFIX + "activate-node"
#: The header in which a SuperNode sends its public key (``flwr.supercore.constant.FLEET_HTTP_PUBLIC_KEY_HEADER``).
PUBLIC_KEY_HEADER = "flwr-public-key"
#: Phrases a refused SuperNode prints (Flower shows an error's ``extra``), which :mod:`flcore.deploy.sitelog` reads.
NOT_REGISTERED = "flsuite: this site's key is not registered at this coordinator"
STILL_ACTIVE = "flsuite: this site's previous session is still active at this coordinator"
#: Seconds a forwarded call may take; Flower's own Fleet client gives up after 30 s a call.
UPSTREAM_TIMEOUT_S = 120.0


def gateway_app(upstream: str, ca: Path | None, database: Path | None = None) -> Any:
    """The gateway as an ASGI app forwarding Fleet calls to ``upstream`` (``HOST:PORT``; TLS when ``ca``).

    With the SuperLink's ``database``, a refused activation is explained (:func:`explain_refusal`).
    """
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    verify: ssl.SSLContext | bool = False
    if ca is not None:
        verify = ssl.create_default_context(cafile=str(ca))
    base = f"{'https' if ca is not None else 'http'}://{upstream}"
    client = httpx.AsyncClient(base_url=base, verify=verify, timeout=UPSTREAM_TIMEOUT_S)

    async def forward(request: Request) -> Response:
        path = request.url.path
        if request.method != "POST" or not path.startswith(FLEET_PREFIX) or ".." in path:
            return PlainTextResponse(REFUSAL, status_code=403)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            reply = await client.post(path, content=await request.body(), headers=headers)
        except httpx.TransportError as err:  # the SuperLink restarts: SuperNodes retry a 503
            return PlainTextResponse(f"the SuperLink is not reachable from the gateway: {err!r}\n", status_code=503)
        kept = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP_HEADERS | {"content-encoding"}}
        body = reply.content
        if path == ACTIVATE and reply.status_code >= 400 and database is not None:
            body = explain_refusal(body, request.headers.get(PUBLIC_KEY_HEADER, ""), database)
        return Response(body, status_code=reply.status_code, headers=kept)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)


def explain_refusal(body: bytes, public_key_b64: str, database: Path) -> bytes:
    """Flower's refusal of an activation, with its cause added where the SuperNode prints it.

    Flower answers "Failed to activate SuperNode" (code 2004) both to a key nobody
    registered and to a registered site whose previous session has not expired yet (a
    SuperNode killed without saying goodbye counts as connected until it misses its
    heartbeats). The gateway reads which from the SuperLink's ``node`` table and puts it
    in the error's ``extra``, which the SuperNode prints in its exit report.
    """
    import base64
    import binascii
    import time

    from flcore.exceptions import DeploymentError
    from flcore.federation.registry import key_session

    if not public_key_b64:  # not a signed SuperNode request: nothing to look up
        return body
    try:
        payload = json.loads(body)
        session = key_session(database, base64.b64decode(public_key_b64, validate=True))
    except (ValueError, binascii.Error, DeploymentError):  # not Flower's JSON error, or no readable state: as it was
        return body
    if not isinstance(payload, dict):
        return body
    if session is None:
        payload["extra"] = NOT_REGISTERED + ": send it the site's public key (sites/<name>.pub) to register."
    elif session[0] == "online":
        left = max(0.0, session[1] - time.time())
        payload["extra"] = f"{STILL_ACTIVE} for about {left:.0f} s more (it expires when heartbeats stop)."
    else:
        return body
    return json.dumps(payload).encode()


def _main(argv: Sequence[str]) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m flcore.deploy.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="public HOST:PORT the SuperNodes connect to")
    parser.add_argument("--upstream", required=True, help="the SuperLink's loopback HOST:PORT")
    parser.add_argument("--certfile", help="the SuperLink's TLS certificate (served to SuperNodes)")
    parser.add_argument("--keyfile", help="its private key")
    parser.add_argument("--ca", help="the pilot CA, to check the SuperLink's certificate upstream")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP on both sides (trials on one machine)")
    parser.add_argument("--database", help="the SuperLink's database, to explain a refused activation")
    args = parser.parse_args(list(argv))
    host, _, port = args.listen.rpartition(":")
    tls = {} if args.insecure else {"ssl_certfile": args.certfile, "ssl_keyfile": args.keyfile}
    database = Path(args.database) if args.database else None
    app = gateway_app(args.upstream, None if args.insecure else Path(args.ca), database)
    uvicorn.run(app, host=host.strip("[]"), port=int(port), log_level="warning", access_log=False, **tls)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
