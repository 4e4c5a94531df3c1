"""How the app's events reach the handlers: errors become messages on the page, warnings toasts, and
every event that uses the models shares one queue slot."""

from __future__ import annotations

import functools
import logging

import gradio as gr

log = logging.getLogger(__name__)

# Every event that uses the models shares one queue slot: handlers never run side by side (they share
# the two models, and the attention view switches a model's attention backend while it runs).
ONE_AT_A_TIME = {"concurrency_limit": 1, "concurrency_id": "models"}


def user_message(e: BaseException) -> str:
    """The message the page shows for an exception: the lab's own errors already name the problem
    and the fix; anything else is named with what to try."""
    if isinstance(e, KeyError):  # the registry's "unknown model ..." (str() would add quotes)
        return str(e.args[0]) if e.args else "unknown name"
    if isinstance(e, (ValueError, FileNotFoundError, FileExistsError, TypeError, RuntimeError)):
        return str(e)
    if isinstance(e, OSError):
        return (f"{e}. If this is a hub id: the app is offline unless started with --online; otherwise "
                f"check the folder's path and permissions")
    log.exception("unexpected error in a handler")
    return f"unexpected error ({type(e).__name__}: {e}); the server log has the details"


def visible(fn):
    """Run a handler; user errors become `gr.Error`, handler warnings become `gr.Warning` toasts."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            out = fn(*args, **kwargs)
        except Exception as e:  # shown in the page, naming the problem; the server keeps serving
            raise gr.Error(user_message(e)) from None
        for w in out.get("warnings", []) if isinstance(out, dict) else []:
            gr.Warning(w)
        return out
    return run
