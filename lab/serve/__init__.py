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
        uvicorn.Server(config).run()
    finally:
        engine.close()
