"""Layer 6 — the course: which models notebooks load (`models`), exercise checks (`exercises`) and
the executed copies of the notebooks (`render`). The machine check (`make check`) is `lab.check`."""

from .models import model_names, models
from .predictions import predict, predictions

__all__ = ["model_names", "models", "predict", "predictions"]
