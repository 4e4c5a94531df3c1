"""Layer 0 — storage: crash-safe files and folders, JSON lines, the cache folder, package folders.

Nothing here knows about models or GEM; every other layer writes through these helpers.
"""

from .atomic import (atomic_dir, atomic_file, folder_problem, read_manifest, remove_stale_temporaries, reseal,
                     write_json_atomic)
from .jsonl import load_safetensors, read_json, read_jsonl
from .paths import CACHE_ENV, PROJECT_ROOT, cache_dir, package_dir

__all__ = ["CACHE_ENV", "PROJECT_ROOT", "atomic_dir", "atomic_file", "cache_dir", "folder_problem", "load_safetensors", "package_dir", "read_json", "read_jsonl",
           "read_manifest", "remove_stale_temporaries", "reseal", "write_json_atomic"]
