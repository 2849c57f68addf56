"""The server's own errors: one JSON line for the client and one log line, never a bare 500."""

import threading

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from charnn.server import free_port
from charnn.server.app import InternalErrors


def failing_app() -> FastAPI:
    """Routes that fail as a bug of the server would: before answering, and in the middle of a stream."""
    app = FastAPI()

    @app.get("/fails")
    async def fails() -> dict:
        raise KeyError("training")

    @app.get("/fails-mid-stream")
    async def fails_mid_stream() -> StreamingResponse:
        async def chunks():
            yield "data: one\n\n"
            raise OSError("the disk went away")

        return StreamingResponse(chunks(), media_type="text/event-stream")

    app.add_middleware(InternalErrors)
    return app


@pytest.fixture
def failing_server():
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(failing_app(), host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_bug_answers_one_json_line_and_logs_one_line(failing_server, capfd):
    reply = httpx.get(failing_server + "/fails")
    assert reply.status_code == 500
    assert reply.json() == {"detail": "internal error: KeyError: 'training'"}
    log = capfd.readouterr().err.strip().splitlines()
    assert log == ["charnn serve: GET /fails: internal error: KeyError: 'training'"]


def test_a_bug_mid_stream_keeps_what_was_sent_and_logs_one_line(failing_server, capfd):
    with httpx.stream("GET", failing_server + "/fails-mid-stream") as reply:
        assert reply.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # the stream is cut, not finished
            b"".join(reply.iter_raw())
    log = capfd.readouterr().err.strip().splitlines()
    assert log == ["charnn serve: GET /fails-mid-stream: internal error: OSError: the disk went away"]
