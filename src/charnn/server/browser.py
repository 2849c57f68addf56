"""The playground's "run in my browser" switch: the served model's web export (ONNX graph, vocabulary, the
exported page's script and onnxruntime-web), built on first request and kept in memory, under /browser/."""

from __future__ import annotations

import asyncio
import mimetypes

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response

from charnn.errors import CharnnError
from charnn.export.folder import export_files
from charnn.store.model_dir import LoadedModel


def add_browser_routes(app: FastAPI, loaded: LoadedModel) -> None:
    """GET /browser/status says whether the switch can work here (and why not); /browser/NAME the files."""
    built: dict[str, object] = {}
    lock = asyncio.Lock()

    async def files() -> dict[str, bytes]:
        async with lock:
            if "files" not in built and "reason" not in built:
                try:
                    built["files"] = await asyncio.to_thread(export_files, loaded, "web")
                except CharnnError as e:
                    built["reason"] = str(e)
        if "reason" in built:
            raise HTTPException(503, built["reason"])
        return built["files"]  # type: ignore[return-value]

    @app.get("/browser/status")
    async def status() -> dict:
        try:
            await files()
        except HTTPException as e:
            return {"available": False, "reason": e.detail}
        return {"available": True, "reason": ""}

    @app.get("/browser/{name}")
    async def browser_file(name: str) -> Response:
        found = (await files()).get(name)
        if found is None:
            raise HTTPException(404, "no such file")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Response(found, media_type=kind, headers={"Cache-Control": "no-cache"})
