"""The web playground and HTTP API behind `charnn serve` (FastAPI on uvicorn; optional extra `serve`).

One model is loaded once and shared read-only; every request samples with its own state and generator, in a
worker thread. Concurrency is bounded (a few running, a short queue, then 503), bodies and lengths are capped,
each request has a time limit, and a client that goes away stops its generation.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, create_model

from charnn.api import describe, stream
from charnn.config import SamplingConfig, ServeConfig
from charnn.declare import declared
from charnn.errors import CharnnError
from charnn.server.look import CopyFinder, look_router
from charnn.store.model_dir import LoadedModel

STATIC = Path(str(resources.files("charnn").joinpath("server/static")))


def request_model(name: str, exclude: tuple[str, ...] = ()) -> type[BaseModel]:
    """A pydantic model of SamplingConfig's declared settings (names, defaults, bounds and help)."""
    fields: dict[str, Any] = {}
    for d in declared(SamplingConfig):
        if d.name in exclude:
            continue
        kind = d.kind | None if d.optional else d.kind
        fields[d.name] = (kind, Field(d.default, description=d.how.help, **d.how.bounds))
    return create_model(name, **fields)


GenerateRequest = request_model("GenerateRequest")
# A stream carries one sample; the page and EventSource clients send these as query parameters.
StreamRequest = request_model("StreamRequest", exclude=("num_samples",))


class Busy(Exception):
    """No slot and no room in the queue."""


class Gate:
    """At most `running` generations at once and `waiting` more in line; beyond that, refuse."""

    def __init__(self, running: int, waiting: int):
        self._slots = asyncio.Semaphore(running)
        self._capacity = running + waiting
        self.inside = 0  # running plus waiting

    async def __aenter__(self) -> None:
        if self.inside >= self._capacity:
            raise Busy
        self.inside += 1
        try:
            await self._slots.acquire()
        except BaseException:
            self.inside -= 1
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._slots.release()
        self.inside -= 1


def _chars_in_thread(
    chars: Iterator[list[str]],
    stop: threading.Event,
    deadline: float,
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue,
) -> None:
    """Run the sampler, handing each step to the event loop; stop on request or at the deadline."""
    reason = "length"
    try:
        for step in chars:
            if stop.is_set():
                reason = "stopped"
                break
            loop.call_soon_threadsafe(queue.put_nowait, step)
            if time.monotonic() > deadline:
                reason = "time limit"
                break
    except Exception as e:  # surfaced to the client as an error event, never a dropped connection
        reason = f"error: {e}"
    loop.call_soon_threadsafe(queue.put_nowait, reason)


def create_app(loaded: LoadedModel, limits: ServeConfig | None = None) -> FastAPI:
    """The FastAPI application serving `loaded` within `limits`."""
    limits = limits or ServeConfig()
    gate = Gate(limits.max_running, limits.max_waiting)
    stats = {"active": 0, "served": 0}
    app = FastAPI(title="charnn", description="Generate text with a character-level RNN.", version="1")
    finder = CopyFinder(loaded)
    app.include_router(look_router(loaded, finder))

    @app.middleware("http")
    async def cap_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limits.max_body_bytes:
            return JSONResponse(
                {"detail": f"request body over {limits.max_body_bytes} bytes"}, status_code=413
            )
        return await call_next(request)

    def sampling(cfg: SamplingConfig) -> tuple[str, Iterator[list[str]]]:
        for value, limit, what in (
            (cfg.length, limits.max_length, "length"),
            (cfg.num_samples, limits.max_samples, "num_samples"),
            (len(cfg.start), limits.max_start, "the start string's length"),
        ):
            if value > limit:
                raise HTTPException(422, f"{what} {value} is over this server's limit of {limit}")
        return stream(loaded, cfg, limits.weights)

    async def run_generation(req: BaseModel) -> AsyncIterator[list[str] | str]:
        """Steps of the generation as they come, then the reason it ended (a str)."""
        try:
            cfg = SamplingConfig(**req.model_dump())
            start, chars = sampling(cfg)
        except CharnnError as e:
            raise HTTPException(422, str(e)) from None
        loop, queue, stop = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()
        try:
            async with gate:
                stats["active"] += 1
                try:
                    deadline = time.monotonic() + limits.timeout
                    worker = threading.Thread(
                        target=_chars_in_thread, args=(chars, stop, deadline, loop, queue), daemon=True
                    )
                    worker.start()
                    yield [start] * cfg.num_samples
                    while True:
                        item = await queue.get()
                        yield item
                        if isinstance(item, str):
                            break
                finally:
                    stop.set()
                    stats["active"] -= 1
                    stats["served"] += 1
        except Busy:
            raise HTTPException(
                503, "the server is busy; try again in a moment", {"Retry-After": "2"}
            ) from None

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model_info() -> dict:
        return {
            **describe(loaded),
            "limits": {
                "max_length": limits.max_length,
                "max_samples": limits.max_samples,
                "timeout_s": limits.timeout,
            },
        }

    @app.get("/v1/stats")
    async def server_stats() -> dict:
        return {**stats, "waiting_or_running": gate.inside}

    @app.post("/v1/generate")
    async def generate(req: GenerateRequest, copies: Annotated[int, Query(ge=0)] = 0) -> dict:
        """Generate; `?copies=K` adds the spans of K+ chars each text copies from the training text."""
        started = time.perf_counter()
        parts: list[list[str]] = [[] for _ in range(req.num_samples)]
        reason = "length"
        async for item in run_generation(req):
            if isinstance(item, str):
                reason = item
            else:
                for part, c in zip(parts, item, strict=True):
                    part.append(c)
        texts = ["".join(p) for p in parts]
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
        events = run_generation(req)
        first = await anext(events)  # validation, the queue and the start string happen before the 200

        async def sse() -> AsyncIterator[str]:
            try:
                yield f"event: start\ndata: {json.dumps({'text': first[0]})}\n\n"
                async for item in events:
                    if isinstance(item, str):
                        yield f"event: done\ndata: {json.dumps({'finish_reason': item})}\n\n"
                    else:
                        yield f"data: {json.dumps({'text': item[0]})}\n\n"
            finally:  # also when the client went away: stop its generation now
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

    return app
