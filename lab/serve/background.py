"""`BackgroundServer`: `lab serve`'s app in a thread of this process, on a free loopback port (for
tests, benchmarks and notebooks that want a live server without a second process)."""

from __future__ import annotations

import socket
import threading
import time

from .api import build_app
from .engine import Engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BackgroundServer:
    """uvicorn serving `engine` in a daemon thread; `url` is its /v1 base; `stop()` shuts it down
    gracefully (requests in flight finish, up to 5 s) and closes the engine."""

    def __init__(self, engine: Engine, timeout_s: float = 30):
        import uvicorn

        self.engine, self.port = engine, free_port()
        self.app = build_app(engine)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the server did not start on 127.0.0.1:{self.port}")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.engine.close()
