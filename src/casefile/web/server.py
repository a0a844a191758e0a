"""Running the TAXII app with uvicorn: in the foreground (`casefile serve`) or in a thread (tests,
benchmarks). Loopback is the default; binding elsewhere is the operator's explicit choice."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from casefile.errors import ConfigError
from casefile.web.taxii import create_app


def serve(
    data_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"
) -> None:
    """Serve the TAXII API until interrupted."""
    uvicorn.run(create_app(data_dir), host=host, port=port, log_level=log_level, server_header=False)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running_server(
    data_dir: str | Path, *, host: str = "127.0.0.1", port: int | None = None, startup_timeout: float = 20.0
) -> Iterator[str]:
    """Run the server in a background thread; yields its base URL and stops it cleanly on exit."""
    port = port or free_port(host)
    config = uvicorn.Config(
        create_app(data_dir), host=host, port=port, log_level="warning", server_header=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"taxii-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError(f"TAXII server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
