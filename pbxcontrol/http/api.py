"""The Bottle app for /api/json/: routing, parameters, auth and the envelope on every answer."""

from __future__ import annotations

import ctypes
import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import bottle
import orjson
from sqlalchemy import Connection, Engine

from pbxcontrol.auth.authenticator import Authenticator, Caller
from pbxcontrol.db.outage import OutageLog, is_outage
from pbxcontrol.http import envelope, params, static
from pbxcontrol.http.body import Sent
from pbxcontrol.http.envelope import ApiError

log = logging.getLogger("pbxcontrol.http")
access_log = logging.getLogger("pbxcontrol.access")

#: The only methods served (SPEC §13); any other gets HTTP 405 with `Allow` and runs nothing
#: (HEAD would run a GET's function, the hang-up included, and just drop the answer).
METHODS = ("GET", "POST")
ALLOW = ", ".join(METHODS)
MAX_BODY = 64 * 1024
MAX_QUERY = 8 * 1024  # below the server's header limit, so it still gets an envelope
JSON = "application/json; charset=utf-8"


# A big answer (thousands of legs) leaves tens of MB of freed row objects in the C heap,
# which glibc keeps unless asked: give it back, so a NOC's full listing does not stay resident.
_TRIM_ABOVE = 1024 * 1024


def _malloc_trim() -> Callable[[], object]:
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return functools.partial(trim, 0)


_release_memory = _malloc_trim()

#: As a function's privileges: any privilege at all will do (user/login).
ANY_PRIVILEGE = "*"
READ_ONLY = (
    "This token may only read (scope=read): log in with scope=all (the default) for this function."
)


@dataclass(frozen=True)
class ApiRequest:
    """What an API function receives: its parameters (credentials removed), the caller, and
    the request's database connection: one transaction, the one auth already read through,
    committed when the function returns and rolled back when it raises. A handler never
    commits, opens another connection or keeps this one past its return."""

    params: dict[str, str]
    caller: Caller
    conn: Connection
    address: str = ""  # the client's address, as the server saw it


Handler = Callable[[ApiRequest], Any]


@dataclass(frozen=True)
class ApiFunction:
    """A JSON function (`handler` answers it) or a stream function (`handler` opens it).
    `read`: it changes nothing, so a token of scope `read` may call it (streams all are)."""

    path: str
    handler: Handler
    privileges: frozenset[str]
    read: bool = False


@dataclass
class JsonApi:
    """The registry of what is served under /api/json/<path>/ and /api/stream/<path>/, and the
    one path every request and stream opening takes: its function, its caller (credentials
    or a trusted caller), the privilege check, the handler — on one connection."""

    engine: Engine
    authenticator: Authenticator
    #: Called after each request with (function or "unknown", envelope code, seconds): metrics.
    observe: Callable[[str, int, float], None] = lambda function, code, seconds: None
    functions: dict[str, ApiFunction] = field(default_factory=dict)
    streams: dict[str, ApiFunction] = field(default_factory=dict)  # their handlers open them
    statics: dict[str, Path] = field(default_factory=dict)  # /<prefix>/ -> directory
    #: Requests answered 503 because the database did not answer: logged once in a while.
    outages: OutageLog = field(default_factory=lambda: OutageLog(log))

    def add_static(self, prefix: str, directory: Path) -> None:
        if prefix in self.statics:
            raise ValueError(f"static pages at /{prefix}/ are registered twice")
        self.statics[prefix] = Path(directory)

    def add(
        self, path: str, handler: Handler, privileges: Iterable[str], *, read: bool = False
    ) -> None:
        _register(self.functions, "API function", path, handler, privileges, read)

    def add_stream(self, path: str, opener: Handler, privileges: Iterable[str]) -> None:
        # A stream only shows what is there: every stream function is read-only.
        _register(self.streams, "stream function", path, opener, privileges, True)

    def find(self, path: str, *, stream: bool = False) -> ApiFunction:
        """The function served at `path` (404 if none)."""
        function = (self.streams if stream else self.functions).get(path.strip("/"))
        if function is None:
            raise ApiError(404)
        return function

    def authorize(
        self, conn: Connection, function: ApiFunction, values: dict[str, str], address: str
    ) -> Caller:
        """The caller of `values`' credentials (removed from them), allowed to use `function`
        (401, 402 otherwise); on the request's connection."""
        caller = self.authenticator.from_params(conn, values, address)
        check_privileges(function, caller)
        return caller

    def run(
        self, function: ApiFunction, values: dict[str, str], address: str, caller: Caller | None
    ) -> tuple[Caller, Any]:
        """Auth and the function on one connection, in one transaction: (caller, result).
        `caller`, when given, is trusted instead of the credentials (see `call`)."""
        with self.engine.begin() as conn:
            if caller is None:
                caller = self.authorize(conn, function, values, address)
            else:
                check_privileges(function, caller)
            return caller, function.handler(ApiRequest(values, caller, conn, address))

    def dispatch(
        self,
        path: str,
        method: str,
        query: str,
        body: bytes,
        address: str = "",
        caller: Caller | None = None,
    ) -> tuple[int, bytes]:
        """Answer one request: (envelope code, JSON body). Never raises. `caller`, when given,
        is trusted instead of the request's credentials (see `call`)."""
        code, payload = self.respond(path, method, query, body, address, caller)
        return code, payload if isinstance(payload, bytes) else payload.join()

    def respond(
        self,
        path: str,
        method: str,
        query: str,
        body: bytes,
        address: str = "",
        caller: Caller | None = None,
    ) -> tuple[int, bytes | envelope.Pieces]:
        """`dispatch`, with a body of Pieces left in its pieces (the HTTP route sends them
        as they are)."""
        try:
            if method not in METHODS:
                raise ApiError(405)
            function = self.find(path)
            values = params.parse(query, body) if method == "POST" else params.parse(query)
            result = self.run(function, values, address, caller)[1]
            if isinstance(result, envelope.Outcome):  # committed, answered without data
                return result.code, envelope.error(result)
            payload = envelope.ok(result)
            size = len(payload) if isinstance(payload, bytes) else payload.size
            if size > _TRIM_ABOVE:
                _release_memory()
            return 200, payload
        except ApiError as err:
            return err.code, envelope.error(err)
        except Exception as exc:
            if is_outage(exc):
                self.outages.seen(exc)
                return 503, envelope.error(envelope.unreachable())
            log.exception("unexpected error in %s %s", method, path)
            return 500, envelope.error(ApiError(500))

    def call(self, path: str, values: dict[str, str], caller: Caller) -> dict[str, Any]:
        """The function at `path` run in this process as `caller` (the operator's tools): the
        same parameter parsing, privilege check, handler and envelope as an HTTP request, on
        one connection; the envelope as a dict. No password: whoever can run this already
        holds the database."""
        _code, body = self.dispatch(path, "GET", urlencode(values), b"", "local", caller)
        return orjson.loads(body)


def _register(
    where: dict[str, ApiFunction],
    kind: str,
    path: str,
    handler: Handler,
    privileges: Iterable[str],
    read: bool,
) -> None:
    key = path.strip("/")
    if key in where:
        raise ValueError(f"{kind} {key!r} is registered twice")
    where[key] = ApiFunction(key, handler, frozenset(privileges), read)


def check_privileges(function: ApiFunction, caller: Caller) -> None:
    """402 unless the caller has one of the function's privileges (ANY_PRIVILEGE: any), and
    its credentials' scope allows the function (a `read` token: read-only functions only)."""
    wanted = function.privileges
    if not (caller.privileges if ANY_PRIVILEGE in wanted else wanted & caller.privileges):
        raise ApiError(402)
    if caller.scope != "all" and not function.read:
        raise ApiError(402, [("", READ_ONLY)])


def refuse_method() -> None:
    """(A hook before every route: the API, streams without a hub, static pages, /health,
    /metrics.) HTTP 405 with `Allow` and the envelope for a method other than GET and POST,
    before any route is matched: bottle would answer HEAD with a GET route."""
    req = bottle.request
    if req.method in METHODS:
        return
    access_log.info("%s %s %s 405", req.environ.get("REMOTE_ADDR", ""), req.method, req.path)
    raise bottle.HTTPResponse(
        envelope.error(ApiError(405)),
        405,
        {"Allow": ALLOW, "Content-Type": JSON, "Cache-Control": "no-store"},
    )


def json_error(err: bottle.HTTPError) -> bytes:
    """Bottle's own errors (no route, a route's 405) as the envelope."""
    if err.status_code >= 500:
        log.error("HTTP %s: %s", err.status_code, err.body)
    bottle.response.content_type = JSON
    return envelope.error(
        ApiError(err.status_code if err.status_code in envelope.MESSAGES else 500)
    )


def build_app(api: JsonApi) -> bottle.Bottle:
    app = bottle.Bottle()
    app.config["json.enable"] = False  # we serialise the envelope ourselves
    app.add_hook("before_request", refuse_method)

    @app.route("/api/json", method="ANY")
    @app.route("/api/json/", method="ANY")
    @app.route("/api/json/<path:path>", method="ANY")
    def json_api(path: str = "") -> Sent:
        started = time.perf_counter()
        req = bottle.request
        method = req.method
        address = req.environ.get("REMOTE_ADDR", "")
        body = b""
        query = req.environ.get("QUERY_STRING", "")
        payload: bytes | envelope.Pieces
        if len(query) > MAX_QUERY:
            code, payload = 413, envelope.error(ApiError(413))
        elif method == "POST":
            if (req.content_length or 0) > MAX_BODY:
                code, payload = 413, envelope.error(ApiError(413))
            else:
                body = req.body.read(MAX_BODY + 1)
                code, payload = (
                    (413, envelope.error(ApiError(413)))
                    if len(body) > MAX_BODY
                    else api.respond(path, method, query, body, address)
                )
        else:
            code, payload = api.respond(path, method, query, b"", address)
        bottle.response.content_type = JSON
        bottle.response.set_header("Cache-Control", "no-store")
        elapsed = time.perf_counter() - started
        name = path.strip("/")
        api.observe(name if name in api.functions else "unknown", code, elapsed)
        # The query string holds credentials: only the path is ever logged. The address is
        # the client's, resolved through trusted proxies (pbxcontrol.auth.proxy).
        line = (address, method, path, code, elapsed * 1000)
        # bottle joins a list: an iterable, with the length it cannot know.
        if isinstance(payload, bytes):
            payload = envelope.Pieces((payload,))
        bottle.response.content_length = payload.size
        return Sent(payload.parts, lambda: access_log.info("%s %s /api/json/%s %s %.1fms", *line))

    app.default_error_handler = json_error
    for prefix, directory in api.statics.items():
        static.mount(app, prefix, directory)
    return app
