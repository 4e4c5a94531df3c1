"""Layer 6 — the course: which models notebooks load (`models`), exercise checks (`exercises`) and
the "is this laptop ready?" check (`ready`, `make check`)."""

from .models import model_names, models

__all__ = ["model_names", "models"]
