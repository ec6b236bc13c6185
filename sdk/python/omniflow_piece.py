"""omniflow_piece: write OmniFlow pieces in Python (built with componentize-py).

A piece is a WebAssembly component offering one or more *actions*. Here an
action is a plain function ``(ctx, input) -> JSON-able value``; input and
output cross the boundary as JSON text, and the JSON Schemas you declare are
published to the host (which validates every input against its schema before
the call).

    from omniflow_piece import Piece, InvalidInput, log

    piece = Piece("adder", "0.1.0", "Adds two numbers")

    @piece.action("add", "Add a and b",
                  input_schema={"type": "object", "required": ["a", "b"],
                                "properties": {"a": {"type": "integer"},
                                               "b": {"type": "integer"}}},
                  output_schema={"type": "object",
                                 "properties": {"sum": {"type": "integer"}}})
    def add(ctx, input):
        log.info(f"adding on attempt {ctx.attempt}")
        return {"sum": input["a"] + input["b"]}

    Handler = piece.handler()      # componentize-py looks up `Handler`

Build with ``scripts/build-lang-piece.sh python DIR out.wasm`` (DIR holds
``app.py``; this file is put on the module path for you).

Errors decide whether the host retries:

- ``raise InvalidInput("...")``: the input does not fit; never retried.
- ``raise Retryable("...", retry_after_ms=5000)``: transient; retried per the
  step's policy, waiting at least ``retry_after_ms`` when given.
- ``raise Fatal("...")``: permanent; never retried.
- Any other exception (a bug: ``KeyError``, ``TypeError``...) becomes a
  *fatal* step error whose message is ``"<ExceptionType>: <message>"``, and
  its traceback goes to the step log at error level. It never traps the
  component. (The Rust SDK makes ``?`` retryable; in Python an unexpected
  exception is almost always a bug that a retry cannot fix. Raise
  ``Retryable`` yourself for transient failures; the HTTP helper below does.)

Logging: ``log.trace/debug/info/warn/error(message)`` append a line to the
step log (``print`` also reaches it, without a level).

HTTP: ``http.get(url)``, ``http.post(url, json=...)``, ``http.request(...)``
go through ``wasi:http/outgoing-handler``; the host checks every request
against the step's ``grants.http`` and places ``${secret:NAME}`` values. A
transport failure raises ``HttpTransportError`` (a ``Retryable``); a denied
request ``HttpDenied`` (a ``Fatal``; the step log names the grant to add).
The helper is synchronous (it blocks on ``wasi:io/poll``), so it needs
neither ``asyncio`` nor the ``poll_loop.py`` that ``componentize-py bindings``
writes (whose ``wit_world.imports.types`` import is wrong in this world: the
HTTP types module is ``wasi_http_types`` because ``omniflow:piece/types``
takes the name ``types`` too).

Outside a component (plain CPython, e.g. unit tests) the module still imports:
``Piece.call`` runs an action, ``log`` prints to stderr and ``http`` raises
``Fatal``.
"""

from __future__ import annotations

import json as _json
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

try:  # the bindings componentize-py generates for the `piece` world
    from componentize_py_types import Err as _Err
    from componentize_py_types import Ok as _Ok
    from wit_world.imports import log as _wit_log
    from wit_world.imports import omniflow_piece_types as _types
    from wit_world.imports import outgoing_handler as _outgoing
    from wit_world.imports import monotonic_clock as _clock
    from wit_world.imports import poll as _poll
    from wit_world.imports import streams as _streams
    from wit_world.imports import wasi_http_types as _ht

    IN_COMPONENT = True
except ImportError:  # plain CPython: tests, type checkers
    IN_COMPONENT = False

__all__ = [
    "Piece",
    "Context",
    "StepError",
    "InvalidInput",
    "Retryable",
    "Fatal",
    "log",
    "http",
    "Response",
    "HttpError",
    "HttpDenied",
    "HttpInvalidUrl",
    "HttpTooLarge",
    "HttpTransportError",
]


# ---------------------------------------------------------------- errors


class StepError(Exception):
    """Base of the errors an action raises on purpose (see the subclasses)."""

    kind = "fatal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = str(message)


class InvalidInput(StepError):
    """The input does not fit the action: fix the workflow. Never retried."""

    kind = "invalid-input"


class Retryable(StepError):
    """A transient failure: retried per the step's retry policy.

    ``retry_after_ms``: wait at least this long before the next attempt
    (an HTTP ``Retry-After``, a model still loading).
    """

    kind = "retryable"

    def __init__(self, message: str, retry_after_ms: Optional[int] = None):
        super().__init__(message)
        if retry_after_ms is not None:
            retry_after_ms = max(0, min(int(retry_after_ms), 2**64 - 1))
        self.retry_after_ms = retry_after_ms


class Fatal(StepError):
    """A permanent failure. Never retried."""

    kind = "fatal"


# ---------------------------------------------------------------- log


class _Log:
    """Lines logged here end up in the step's log (size-capped by the host)."""

    def _emit(self, level: str, message: Any) -> None:
        text = message if isinstance(message, str) else str(message)
        if IN_COMPONENT:
            _wit_log.log(getattr(_wit_log.Level, level.upper()), text)
        else:
            print(f"[{level}] {text}", file=sys.stderr)

    def trace(self, message: Any) -> None:
        self._emit("trace", message)

    def debug(self, message: Any) -> None:
        self._emit("debug", message)

    def info(self, message: Any) -> None:
        self._emit("info", message)

    def warn(self, message: Any) -> None:
        self._emit("warn", message)

    warning = warn

    def error(self, message: Any) -> None:
        self._emit("error", message)


log = _Log()


# ---------------------------------------------------------------- piece


@dataclass(frozen=True)
class Context:
    """Where the current call comes from."""

    run_id: str
    step_id: str
    attempt: int  # 1 for the first attempt, 2 for the first retry, ...
    idempotency_key: str  # stable across attempts: send it downstream


ActionFn = Callable[[Context, Any], Any]


@dataclass
class _Action:
    name: str
    description: str
    func: ActionFn
    input_schema: Any
    output_schema: Any


def _schema_text(schema: Any, what: str, action: str) -> str:
    if isinstance(schema, str):
        _json.loads(schema)  # must be JSON text already
        return schema
    try:
        return _json.dumps(schema, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"action {action!r}: {what} schema is not JSON: {e}") from None


class Piece:
    """A piece: name, version, description, its actions and what it asks for."""

    def __init__(
        self,
        name: str,
        version: str,
        description: str,
        *,
        http_destinations: Iterable[str] = (),
        secrets: Iterable[str] = (),
    ):
        self.name = name
        self.version = version
        self.description = description
        self.http_destinations: List[str] = list(http_destinations)
        self.secrets: List[str] = list(secrets)
        self._actions: Dict[str, _Action] = {}

    def action(
        self,
        name: str,
        description: str = "",
        *,
        input_schema: Any = None,
        output_schema: Any = None,
    ) -> Callable[[ActionFn], ActionFn]:
        """Decorator: register ``func(ctx, input)`` as the action ``name``.

        Schemas are dicts (or JSON text). The input schema defaults to
        ``{"type": "object"}``, the output schema to ``{}`` (anything).
        """

        def register(func: ActionFn) -> ActionFn:
            self.add_action(name, description, func, input_schema, output_schema)
            return func

        return register

    def add_action(
        self,
        name: str,
        description: str,
        func: ActionFn,
        input_schema: Any = None,
        output_schema: Any = None,
    ) -> "Piece":
        """Register an action without the decorator; returns the piece."""
        if not name or name in self._actions:
            raise ValueError(f"action name {name!r} is empty or repeated")
        if input_schema is None:
            input_schema = {"type": "object"}
        if output_schema is None:
            output_schema = {}
        self._actions[name] = _Action(
            name,
            description or (func.__doc__ or "").strip().split("\n")[0],
            func,
            _schema_text(input_schema, "input", name),
            _schema_text(output_schema, "output", name),
        )
        return self

    def http_destination(self, destination: str) -> "Piece":
        """Declare a destination this piece expects to be granted (informational)."""
        self.http_destinations.append(destination)
        return self

    def secret(self, name: str) -> "Piece":
        """Declare a secret this piece expects the host to place into requests."""
        self.secrets.append(name)
        return self

    # -- plain-Python entry points (also usable in tests)

    def describe(self) -> Dict[str, Any]:
        """The piece info as a dict (what ``info()`` exports)."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "actions": [
                {
                    "name": a.name,
                    "description": a.description,
                    "input_schema": a.input_schema,
                    "output_schema": a.output_schema,
                }
                for a in self._actions.values()
            ],
            "http_destinations": list(self.http_destinations),
            "secrets": list(self.secrets),
        }

    def call(self, ctx: Context, action: str, input_text: str) -> str:
        """Run ``action`` on JSON text; return JSON text or raise a StepError.

        Any exception other than a StepError becomes ``Fatal`` (traceback
        logged at error level).
        """
        found = self._actions.get(action)
        if found is None:
            known = ", ".join(self._actions)
            raise InvalidInput(
                f"piece {self.name} has no action {action!r} (actions: {known})"
            )
        try:
            value = _json.loads(input_text)
        except ValueError as e:
            raise InvalidInput(f"input: {e}") from None
        try:
            output = found.func(ctx, value)
        except StepError:
            raise
        except Exception as e:  # a bug, not a transient failure
            log.error(
                "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()
            )
            raise Fatal(f"{type(e).__name__}: {e}") from None
        try:
            return _json.dumps(output, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise Fatal(f"output is not JSON: {e}") from None

    # -- the component export

    def handler(self) -> type:
        """The class to bind to the name ``Handler`` in the app module."""
        piece = self

        class Handler:
            def info(self):
                d = piece.describe()
                return _types.PieceInfo(
                    name=d["name"],
                    version=d["version"],
                    description=d["description"],
                    actions=[
                        _types.ActionInfo(
                            name=a["name"],
                            description=a["description"],
                            input_schema=a["input_schema"],
                            output_schema=a["output_schema"],
                        )
                        for a in d["actions"]
                    ],
                    http_destinations=d["http_destinations"],
                    secrets=d["secrets"],
                )

            def run(self, ctx, action: str, input: str) -> str:
                context = Context(ctx.run_id, ctx.step_id, ctx.attempt, ctx.idempotency_key)
                try:
                    return piece.call(context, action, input)
                except StepError as e:
                    raise _Err(_to_wit_error(e)) from None

        Handler.__name__ = Handler.__qualname__ = "Handler"
        return Handler


def _to_wit_error(e: StepError):
    if isinstance(e, InvalidInput):
        return _types.StepError_InvalidInput(e.message)
    if isinstance(e, Retryable):
        return _types.StepError_Retryable(
            _types.RetryableError(message=e.message, retry_after_ms=e.retry_after_ms)
        )
    return _types.StepError_Fatal(e.message)


# ---------------------------------------------------------------- http


class HttpError(StepError):
    """Why a request produced no response (see the subclasses)."""


class HttpDenied(HttpError, Fatal):
    """The host refused the destination or a secret: the step lacks a grant."""


class HttpInvalidUrl(HttpError, Fatal):
    """The request cannot be sent (no scheme, bad header...)."""


class HttpTooLarge(HttpError, Fatal):
    """The response body exceeded the host's cap."""


class HttpTransportError(HttpError, Retryable):
    """Connection refused, DNS failure, timeout, reset...: retryable."""


class Response:
    """A complete HTTP response (the body is read fully; the host caps it)."""

    def __init__(self, status: int, headers: List[Tuple[str, str]], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    def header(self, name: str) -> Optional[str]:
        """The first header with this name (case-insensitive)."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; a non-JSON body is ``Fatal``."""
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise Fatal(f"the response (HTTP {self.status}) is not JSON: {e}") from None

    def retry_after_ms(self) -> Optional[int]:
        """``Retry-After`` in delay-seconds as milliseconds (HTTP dates: None)."""
        value = self.header("retry-after")
        try:
            return max(0, int(float(value) * 1000)) if value else None
        except ValueError:
            return None


def _is_http_url(url: str) -> bool:
    lower = url.lower()
    return lower.startswith("http://") or lower.startswith("https://")


class _Http:
    """Outbound HTTP through the host (grants apply)."""

    def get(self, url: str, **kw: Any) -> Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> Response:
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any) -> Response:
        return self.request("PUT", url, **kw)

    def delete(self, url: str, **kw: Any) -> Response:
        return self.request("DELETE", url, **kw)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Optional[Dict[str, str]] = None,
        body: Optional[bytes | str] = None,
        json: Any = None,
        timeout_ms: Optional[int] = None,
    ) -> Response:
        """Send a request and read the whole response.

        ``headers`` values may hold ``${secret:NAME}`` placeholders. ``json``
        sends a JSON body (and ``content-type: application/json``).
        ``timeout_ms`` bounds the whole request (expiry: HttpTransportError).
        """
        if not IN_COMPONENT:
            raise Fatal("omniflow_piece.http works only inside a component")
        hdrs = [(k.lower(), str(v)) for k, v in (headers or {}).items()]
        if json is not None:
            body = _json.dumps(json, ensure_ascii=False)
            if not any(k == "content-type" for k, _ in hdrs):
                hdrs.append(("content-type", "application/json"))
        data = body.encode("utf-8") if isinstance(body, str) else (body or b"")
        return _send(method.upper(), url, hdrs, data, timeout_ms)


http = _Http()

_METHODS = {
    "GET": "Method_Get",
    "HEAD": "Method_Head",
    "POST": "Method_Post",
    "PUT": "Method_Put",
    "DELETE": "Method_Delete",
    "PATCH": "Method_Patch",
    "OPTIONS": "Method_Options",
}


def _close(resource: Any) -> None:
    """Drop a WIT resource now (children before parents, or the host traps)."""
    if resource is not None:
        resource.__exit__(None, None, None)


def _wait(pollable: Any, deadline_ns: Optional[int]) -> bool:
    """Block until ``pollable`` is ready (True) or the deadline passes (False)."""
    try:
        if deadline_ns is None:
            pollable.block()
            return True
        remaining = max(0, deadline_ns - _clock.now())
        timer = _clock.subscribe_duration(remaining)
        try:
            return 0 in _poll.poll([pollable, timer])
        finally:
            _close(timer)
    finally:
        _close(pollable)


def _send(
    method: str, url: str, headers: List[Tuple[str, str]], data: bytes, timeout_ms: Optional[int]
) -> Response:
    if not _is_http_url(url):
        raise HttpInvalidUrl(f"invalid URL {url!r}: it must start with http:// or https://")
    scheme_text, rest = url.split("://", 1)
    cut = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if i != -1:
            cut = min(cut, i)
    authority, path = rest[:cut], rest[cut:]
    path = path.split("#", 1)[0]
    if not path:
        path = "/"
    elif path.startswith("?"):
        path = "/" + path
    if not authority:
        raise HttpInvalidUrl(f"invalid URL {url!r}: no host")

    def invalid(what: str) -> HttpInvalidUrl:
        return HttpInvalidUrl(f"invalid {what} in request to {url!r}")

    def transport(code: Any) -> HttpError:
        if isinstance(code, _ht.ErrorCode_HttpRequestDenied):
            return HttpDenied(
                f"HTTP request to {url} was denied by the host: no grant of this step "
                "allows it (destination, secret placeholder or private address); the "
                "step log names the grant to add"
            )
        if isinstance(code, _ht.ErrorCode_HttpResponseBodySize):
            return HttpTooLarge(f"the response of {url} is larger than the host's cap")
        detail = type(code).__name__.replace("ErrorCode_", "")
        payload = getattr(code, "value", None)
        if payload is not None:
            detail += f" {payload}"
        return HttpTransportError(f"HTTP request to {url} failed: {detail}")

    fields = _ht.Fields()
    for name, value in headers:
        try:
            fields.append(name, value.encode("utf-8"))
        except _Err:
            raise HttpInvalidUrl(f"header {name!r} is invalid or forbidden") from None
    request = _ht.OutgoingRequest(fields)
    method_cls = _METHODS.get(method)
    try:
        request.set_method(
            getattr(_ht, method_cls)() if method_cls else _ht.Method_Other(method)
        )
    except _Err:
        raise invalid("method") from None
    scheme = _ht.Scheme_Https() if scheme_text.lower() == "https" else _ht.Scheme_Http()
    for setter, value, what in (
        (request.set_scheme, scheme, "scheme"),
        (request.set_authority, authority, "authority"),
        (request.set_path_with_query, path, "path"),
    ):
        try:
            setter(value)
        except _Err:
            raise invalid(what) from None
    out_body = request.body()

    options = None
    deadline_ns = None
    if timeout_ms is not None:
        nanos = max(0, int(timeout_ms)) * 1_000_000
        deadline_ns = _clock.now() + nanos
        options = _ht.RequestOptions()
        for setter in (
            options.set_connect_timeout,
            options.set_first_byte_timeout,
            options.set_between_bytes_timeout,
        ):
            try:
                setter(nanos)
            except _Err:
                pass  # the SDK's own deadline still applies

    try:
        future = _outgoing.handle(request, options)
    except _Err as e:
        raise transport(e.value) from None

    write_error = None
    stream = out_body.write()
    try:
        for i in range(0, len(data), 4096):
            stream.blocking_write_and_flush(data[i : i + 4096])
    except _Err as e:
        write_error = HttpTransportError(f"HTTP request to {url} failed writing the body: {e.value}")
    finally:
        _close(stream)
    if write_error is None:
        try:
            _ht.OutgoingBody.finish(out_body, None)
        except _Err as e:
            raise transport(e.value) from None
    else:  # the host closed the body of a refused request: the future says why
        _close(out_body)

    timed_out = HttpTransportError(f"HTTP request to {url} timed out after {timeout_ms} ms")
    if not _wait(future.subscribe(), deadline_ns):
        _close(future)
        raise timed_out
    result = future.get()
    _close(future)
    if isinstance(result, _Ok) and isinstance(result.value, _Ok):
        response = result.value.value
    elif isinstance(result, _Ok):
        raise transport(result.value.value)
    else:
        raise write_error or HttpTransportError(f"HTTP request to {url} failed: the response was lost")

    status = response.status()
    header_fields = response.headers()
    hdr_list = [(k, v.decode("utf-8", errors="replace")) for k, v in header_fields.entries()]
    _close(header_fields)
    incoming = response.consume()
    in_stream = incoming.stream()
    chunks: List[bytes] = []
    try:
        while True:
            try:
                chunk = in_stream.read(64 * 1024)
            except _Err as e:
                if isinstance(e.value, _streams.StreamError_Closed):
                    break
                err = e.value.value
                code = _ht.http_error_code(err)
                if code is not None:
                    raise transport(code) from None
                raise HttpTransportError(
                    f"HTTP request to {url} failed reading the body: {err.to_debug_string()}"
                ) from None
            if chunk:
                chunks.append(chunk)
            elif not _wait(in_stream.subscribe(), deadline_ns):
                raise timed_out
    finally:
        _close(in_stream)
    _close(_ht.IncomingBody.finish(incoming))
    _close(response)
    return Response(status, hdr_list, b"".join(chunks))
