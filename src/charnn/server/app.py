"""The web playground and HTTP API behind `charnn serve` (FastAPI on uvicorn; optional extra `serve`).

One model is loaded once; one engine (engine.py) advances every live request's samples together, one batched
step per char, each with its own settings and generator. Beyond the engine's capacity requests get 503,
bodies and lengths are capped, each request has a time limit, a client that goes away or stops reading
frees its rows, and shutting down ends every stream with a final event saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
import traceback
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from charnn.api import describe, weights_for
from charnn.config import SamplingConfig, ServeConfig, debug
from charnn.declare import declared
from charnn.errors import CharnnError
from charnn.sampling import start_text
from charnn.server.browser import add_browser_routes
from charnn.server.engine import BLOCK, Engine
from charnn.server.look import BODY_LIMITS, CopyFinder, look_router
from charnn.server.metrics import prometheus
from charnn.server.streams import Busy, Stream
from charnn.store.model_dir import LoadedModel

STATIC = Path(str(resources.files("charnn").joinpath("server/static")))


def request_model(name: str, exclude: tuple[str, ...] = (), strict: bool = True) -> type[BaseModel]:
    """A pydantic model of SamplingConfig's declared settings (names, defaults, bounds and help). A name it
    lacks is refused (a misspelt setting would else fall back to its default); `strict`: each value of its
    own JSON type, as the command line takes them (not `true` for a length), for bodies, not query strings."""
    fields: dict[str, Any] = {}
    for d in declared(SamplingConfig):
        if d.name in exclude:
            continue
        kind = d.kind | None if d.optional else d.kind
        fields[d.name] = (kind, Field(d.default, description=d.how.help, **d.how.bounds))
    return create_model(name, __config__=ConfigDict(extra="forbid", strict=strict), **fields)


GenerateRequest = request_model("GenerateRequest")
# A stream carries one sample; the page and EventSource clients send these as query parameters.
StreamRequest = request_model("StreamRequest", exclude=("num_samples",), strict=False)
_FLAG = re.compile(r"(pass )?--([a-z][a-z-]*)")
_DECLARED = {d.name: d for d in declared(SamplingConfig)}
_FIELDS = set(_DECLARED)


def api_words(message: str) -> str:
    """A settings error as an HTTP client reads it: `top_k`, not `--top-k` ("set skip_unknown", not "pass
    --skip-unknown"); flags that are not request fields stay as they are."""

    def field_name(m: re.Match) -> str:
        name = m[2].replace("-", "_")
        return ("set " if m[1] else "") + name if name in _FIELDS else m[0]

    return _FLAG.sub(field_name, message)


def _printable(value: Any) -> Any:
    """A value of a validation error that JSON can carry: text with a lone surrogate escaped."""
    return value.encode("utf-8", "backslashreplace").decode() if isinstance(value, str) else value


def _in_charnn_words(error: dict) -> str:
    """A request field's error as charnn's checks word it (`top_p must be in (0, 1], got 2`), where the
    field is a declared setting and its check finds the fault; else pydantic's own message."""
    loc, value = error["loc"], error.get("input")
    d = _DECLARED.get(loc[-1]) if loc and "input" in error else None
    if d is None:
        return error["msg"]
    if loc[0] == "query" and isinstance(value, str) and d.kind in (int, float):
        with contextlib.suppress(ValueError):  # a query string's number as text: checked as that number
            value = d.kind(value)
    problem = d.problem(value)
    if not problem:  # e.g. a number sent as JSON text: pydantic's words say what was wrong
        return error["msg"]
    shown = json.dumps(value)
    shown = shown if len(shown) <= 40 else shown[:40] + "..."
    hint = f" ({d.how.hint})" if d.how.hint else ""
    return api_words(f"{d.name} {problem}, got {shown}{hint}")


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with where and what, as FastAPI's own, without echoing more of the input than the value at
    fault: NaN, an infinity or a lone surrogate in it made FastAPI's reply fail (a 500 for the client's
    mistake)."""
    detail = [
        {
            "loc": [_printable(part) for part in e["loc"]],
            "msg": _printable(_in_charnn_words(e)),
            "type": e["type"],
        }
        for e in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def unparsable_body(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's answer to an HTTP error, but for a body that is not UTF-8, where its "error parsing the
    body" says nothing of why."""
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        return JSONResponse({"detail": "the body is not UTF-8 text (a JSON body must be)"}, status_code=400)
    return await http_exception_handler(request, exc)


class CapBody:
    """413 for a request body over `limit` bytes (or the path's own limit in `paths`): by its Content-Length,
    or for a body sent without one (chunked), read here up to the limit and handed on (plain ASGI: responses
    stream untouched)."""

    def __init__(self, app: Any, limit: int, paths: dict[str, int] | None = None):
        self.app, self.default, self.paths = app, limit, paths or {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.paths.get(scope["path"], self.default)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and b"transfer-encoding" not in headers:  # else the chunks say the length
            if int(length) > limit:
                return await _too_big(limit, scope, receive, send)
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > limit:
                return await _too_big(limit, scope, receive, send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> dict:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _too_big(limit: int, scope: dict, receive: Any, send: Any) -> None:
    reply = JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)
    await reply(scope, receive, send)


class InternalErrors:
    """A bug of the server's own (not a bad request) answers 500 with one JSON line naming it, where
    Starlette would answer a bare "Internal Server Error", and leaves one line in the server's log (the
    traceback with CHARNN_DEBUG=1). Past a response's start (a stream) only the log line is left."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_noting(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting)
        except Exception as e:
            if debug():
                traceback.print_exc()
            first_line = (str(e).splitlines() or [""])[0]
            what = f"internal error: {type(e).__name__}: {first_line}"
            print(f"charnn serve: {scope['method']} {scope['path']}: {what}", file=sys.stderr, flush=True)
            if not started:
                await JSONResponse({"detail": what}, status_code=500)(scope, receive, send)


async def cancel_when_gone(request: Request, engine: Engine, stream: Stream) -> None:
    """End `stream` once its client hangs up: a handler that is not streaming is not told otherwise."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    engine.cancel(stream)


def create_app(loaded: LoadedModel, limits: ServeConfig | None = None) -> FastAPI:
    """The FastAPI application serving `loaded` within `limits`."""
    limits = limits or ServeConfig()
    engine = Engine(loaded, weights_for(loaded, limits.weights, BLOCK), limits)
    app = FastAPI(title="charnn", description="Generate text with a character-level RNN.", version="1")
    app.state.engine = engine
    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, unparsable_body)  # type: ignore[arg-type]
    finder = CopyFinder(loaded)
    app.include_router(look_router(loaded, finder))

    app.add_middleware(CapBody, limit=limits.max_body_bytes, paths=BODY_LIMITS)
    app.add_middleware(InternalErrors)  # added last: it runs first, so it sees every other part's errors

    def admit(req: BaseModel) -> Stream:
        """The request's stream, taken in by the engine; 422 for a bad request, 503 without room."""
        try:
            values = req.model_dump()
            if "length" not in req.model_fields_set:  # the default, within this server's limit
                values["length"] = min(values["length"], limits.max_length)
            cfg = SamplingConfig(**values)
            for value, limit, what in (
                (cfg.length, limits.max_length, "length"),
                (cfg.num_samples, limits.max_samples, "num_samples"),
                (len(cfg.start), limits.max_start, "the start string's length"),
            ):
                if value > limit:
                    raise HTTPException(422, f"{what} {value} is over this server's limit of {limit}")
            stream = Stream(cfg, start_text(loaded.vocab, cfg), limits.timeout)
        except CharnnError as e:
            raise HTTPException(422, api_words(str(e))) from None
        engine.wakeups.bind(asyncio.get_running_loop())
        try:
            engine.submit(stream)
        except Busy as e:
            raise HTTPException(503, str(e), {"Retry-After": "2"}) from None
        return stream

    async def steps(stream: Stream) -> AsyncIterator[list[list[str]] | str]:
        """Batches of steps as the engine makes them, then the reason the stream ended (a str)."""
        try:
            while True:
                await stream.event.wait()
                stream.event.clear()
                taken, reason = engine.take(stream)
                if taken:
                    yield taken
                if reason is not None:
                    yield reason
                    return
        finally:  # also when the client went away: free its rows now
            engine.cancel(stream)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model_info() -> dict:
        return {
            **describe(loaded),
            "weights": engine.weights,  # the server's own format, for every request
            "limits": {
                "max_length": limits.max_length,
                "max_samples": limits.max_samples,
                "max_start": limits.max_start,
                "max_body_bytes": limits.max_body_bytes,
                "capacity_streams": engine.capacity,
                "timeout_s": limits.timeout,
                "stall_timeout_s": limits.stall_timeout,
            },
        }

    @app.get("/v1/stats")
    async def server_stats() -> dict:
        now = engine.snapshot()
        # active, served and waiting_or_running: the names of the first /v1/stats, kept for its users
        old = {"active": now["live_streams"], "served": now["served_total"]}
        return {**old, "waiting_or_running": now["live_streams"], **now}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        """The same figures in Prometheus' text format."""
        return PlainTextResponse(prometheus(engine.snapshot()), media_type="text/plain; version=0.0.4")

    @app.post("/v1/generate")
    async def generate(
        req: GenerateRequest, request: Request, copies: Annotated[int, Query(ge=0)] = 0
    ) -> dict:
        """Generate; `?copies=K` adds the spans of K+ chars each text copies from the training text."""
        started = time.perf_counter()
        stream = admit(req)
        parts: list[list[str]] = [[] for _ in range(req.num_samples)]
        reason = "length"
        watch = asyncio.create_task(cancel_when_gone(request, engine, stream))
        try:
            async for item in steps(stream):
                if isinstance(item, str):
                    reason = item
                    continue
                for step in item:
                    for part, c in zip(parts, step, strict=True):
                        part.append(c)
        finally:
            watch.cancel()
        texts = [stream.start + "".join(p) for p in parts]
        copied = {"copies": await finder.spans_of(texts, copies)} if copies else {}
        return {
            "text": texts[0],
            "texts": texts,
            "finish_reason": reason,
            "seconds": round(time.perf_counter() - started, 3),
            **copied,
        }

    @app.get("/v1/generate/stream")
    async def generate_stream(req: Annotated[StreamRequest, Query()]) -> StreamingResponse:
        """Server-Sent Events: `start` once, then one `data: {"text": c}` per character, then `done`."""
        stream = admit(req)  # validation and capacity are settled before the 200

        async def sse() -> AsyncIterator[str]:
            events = steps(stream)
            try:
                yield f"event: start\ndata: {json.dumps({'text': stream.start})}\n\n"
                async for item in events:
                    if isinstance(item, str):
                        yield f"event: done\ndata: {json.dumps({'finish_reason': item})}\n\n"
                    else:  # every step taken at once: one write for however many chars are ready
                        yield "".join(f"data: {json.dumps({'text': step[0]})}\n\n" for step in item)
            finally:
                await events.aclose()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/static/{name}")
    async def static(name: str) -> FileResponse:
        path = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()}:
            raise HTTPException(404, "no such file")
        return FileResponse(path)

    add_browser_routes(app, loaded)
    return app
