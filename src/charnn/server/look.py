"""The serve page's "look inside" tab and copy highlighting: POST /v1/inspect, POST /v1/copying, the view's
script and styles, and the copied spans that POST /v1/generate adds with `?copies=K`.

create_app includes the router; the suffix index of the training text is built (or read from the cache) at
the first request that needs it, in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from charnn.copy_report import encode_known, training_index
from charnn.errors import CharnnError
from charnn.inspection.page import inspection
from charnn.store.model_dir import LoadedModel
from charnn.text.copying import Locator, copied_spans

MAX_PAGE_CHARS = 5_000  # the longest text the tab inspects
MAX_COPYING_CHARS = 100_000


def _body_bytes(chars: int) -> int:
    """The largest JSON body of a text of `chars` chars: 12 bytes each at most (an emoji written as
    \\ud83d\\ude00), and room for the other fields."""
    return 12 * chars + 1024


# These endpoints take texts longer than the server's body cap allows: their bodies are capped by the text.
BODY_LIMITS = {"/v1/inspect": _body_bytes(MAX_PAGE_CHARS), "/v1/copying": _body_bytes(MAX_COPYING_CHARS)}


class InspectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: str = Field(description=f"the text to look inside (at most {MAX_PAGE_CHARS:,} chars)")
    units: int = Field(6, ge=1, le=64, description="units shown per layer, best correlated first")


class CopyingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: str = Field(description="text to find in the training text", max_length=MAX_COPYING_CHARS)
    k: int = Field(20, ge=1, description="shortest copied span reported")


class CopyFinder:
    """Copied spans of texts in the model's training text; the index is loaded once, on first use."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self._lock = threading.Lock()
        self._ready: tuple | None = None

    def _index(self) -> tuple:
        with self._lock:
            if self._ready is None:
                corpus, index, _ = training_index(self.loaded)
                encoding = self.loaded.info.get("training", {}).get("encoding", "utf-8")
                self._ready = (corpus, index, Locator(corpus, encoding))
            return self._ready

    def spans(self, text: str, k: int) -> list[dict]:
        """Copied spans of `text` of at least k chars: start, length, and the file and line they are at."""
        _, index, where = self._index()
        found = copied_spans(index.matches(encode_known(self.loaded.vocab, text, "the text")), k)
        return [
            {
                "start": s.start,
                "length": s.length,
                **dict(zip(("file", "line"), where(s.source), strict=True)),
            }
            for s in found
        ]

    async def spans_of(self, texts: list[str], k: int) -> list[list[dict]]:
        """spans() of each text, in a worker thread; a problem becomes a 422 naming it."""
        try:
            return await asyncio.to_thread(lambda: [self.spans(t, k) for t in texts])
        except CharnnError as e:
            raise HTTPException(422, str(e)) from None


def _asset(name: str, media_type: str) -> Response:
    text = resources.files("charnn").joinpath(f"inspection/{name}").read_text(encoding="utf-8")
    return Response(text, media_type=media_type)


def look_router(loaded: LoadedModel, finder: CopyFinder) -> APIRouter:
    """The endpoints of the look-inside tab and of copy highlighting."""
    router = APIRouter()

    @router.post("/v1/inspect")
    async def inspect(req: InspectRequest) -> dict:
        """Surprisal and top guesses per char, and the units that follow simple features of the text."""
        try:
            return await asyncio.to_thread(inspection, loaded, req.text, req.units, MAX_PAGE_CHARS)
        except CharnnError as e:
            raise HTTPException(422, str(e)) from None

    @router.post("/v1/copying")
    async def copying(req: CopyingRequest) -> dict:
        """The spans of `text` (of at least k chars) found verbatim in the model's training text."""
        (spans,) = await finder.spans_of([req.text], req.k)
        return {"k": req.k, "spans": spans, "copied_chars": sum(s["length"] for s in spans)}

    @router.get("/inspect/view.js")
    async def view_js() -> Response:
        return _asset("view.js", "text/javascript")

    @router.get("/inspect/view.css")
    async def view_css() -> Response:
        return _asset("view.css", "text/css")

    return router
