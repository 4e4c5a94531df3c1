"""GEM Lab app: `python app.py` compares the base model and the shipped GEM model side by side.

    python app.py                                  # http://127.0.0.1:7860
    python app.py --gem runs/my-run/last --port 7861
    python app.py --host 0.0.0.0                   # reachable from other machines (off by default)

Offline by default (no hub download, whoever types a hub id into the picker): --online allows it.
The picker loads registry names, the shipped models and folders under the working directory;
--allow-any-folder lets it load any folder this process can read.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
log = logging.getLogger("app")


def parse_args(argv=None) -> argparse.Namespace:
    from lab.weights import DEFAULT_GEM, DEFAULT_MODEL

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default=DEFAULT_MODEL, help="base model: registry name or HF folder")
    p.add_argument("--gem", default=DEFAULT_GEM, help="GEM model: shipped name or checkpoint folder")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--online", action="store_true", help="allow downloading hub models (default: offline)")
    p.add_argument("--allow-any-folder", action="store_true",
                   help="let the model picker load folders outside the working directory")
    return p.parse_args(argv)


def apply_network_settings(args: argparse.Namespace) -> None:
    """Offline unless --online; a warning when bound beyond the loopback."""
    if not args.online:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this machine can use the app and load models, with no "
                    "password; bind to 127.0.0.1 (the default) unless this network is yours", args.host)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    apply_network_settings(args)
    from lab.app.handlers import Session
    from lab.app.ui import build_demo

    t = time.perf_counter()
    session = Session(args.base, args.gem, allow_any_folder=args.allow_any_folder)
    session.models()  # load both before serving: the first click is not a 10 s wait
    from lab.app.handlers import embeddings_view
    from lab.app.ui import DEFAULT_SET

    log.info("drawing the default maps (%s): about a minute the first time, then read from the cache", DEFAULT_SET)
    embeddings_view(session, "bundled", DEFAULT_SET)  # cached on disk: the page opens with its maps ready
    demo = build_demo(session)
    import threading

    from lab.viz.maps import warm_up

    threading.Thread(target=warm_up, daemon=True).start()  # UMAP's JIT, while the page loads
    log.info("models and default maps ready in %.1f s; serving on http://%s:%d", time.perf_counter() - t,
                                  args.host, args.port)
    from lab.app.ui import LAUNCH

    demo.launch(server_name=args.host, server_port=args.port, **LAUNCH)


if __name__ == "__main__":
    main()
