"""`python -m lab serve`: one GEM model behind an OpenAI-compatible API (embeddings and generation
from the same weights, and GEM's one-prefill extension). See `lab.serve.api` for the routes and
`lab.serve.engine` for batching, limits and the queue.

    python -m lab serve --model gem-smollm2-135m            # http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import logging

from .engine import Busy, Engine, LimitExceeded, Limits

__all__ = ["Busy", "Engine", "LimitExceeded", "Limits", "serve"]

log = logging.getLogger(__name__)


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, limits: Limits = Limits(),
          dtype: str | None = None, device: str | None = None) -> None:
    """Load `model` and serve it until SIGINT / SIGTERM (requests in flight finish, up to 10 s;
    streams stop)."""
    import uvicorn

    from ..weights.loading import load
    from .api import build_app

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this machine can use the model, with no key; "
                    "bind to 127.0.0.1 (the default) unless this network is yours", host)
    engine = Engine(load(model, dtype=dtype, device=device), model, limits)
    log.info("serving %s (%s pooling, %d-d) on http://%s:%d/v1", model, engine.pooling,
             engine.gem.embedding_dim(engine.pooling), host, port)
    config = uvicorn.Config(build_app(engine), host=host, port=port, timeout_graceful_shutdown=10,
                            log_level="info")
    try:
        _QuietServer(config).run()
    finally:
        engine.close()
    log.info("stopped")


def _quiet_server_class():
    import contextlib
    import signal

    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn's server, but SIGINT / SIGTERM only ask it to stop (a second one forces it):
        uvicorn re-raises the signal after its graceful shutdown, which ends in a traceback."""

        @contextlib.contextmanager
        def capture_signals(self):
            def stop(*_):
                self.force_exit = self.should_exit  # the second signal: stop waiting for requests
                self.should_exit = True

            old = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)

    return QuietServer


def _QuietServer(config):  # noqa: N802 - builds the class on first use (uvicorn imports lazily)
    return _quiet_server_class()(config)
