"""A results store for expensive computations, keyed by everything that determines them.

A result is a flat ``dict`` of tensors (plus JSON-able metadata) saved with :func:`torch.save` and
read back with ``torch.load(weights_only=True)``, so loading never runs arbitrary code. The key is
the SHA-256 of the canonical JSON of the parameters, so a changed parameter never reuses a stale
result. Writes go to a temporary file in the same folder and are moved into place with
:func:`os.replace`, so a run killed midway leaves either nothing or a complete file, and the next
run resumes from whatever finished.

The store lives in ``$LHLIB_CACHE`` or, by default, ``~/.cache/lhlib``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "atomic_write_bytes",
    "cache_key",
    "cache_root",
    "cached",
    "load_result",
    "store_result",
    "tensor_fingerprint",
]

# Bump when a change in lhlib alters what a cached computation returns.
CACHE_FORMAT = 1


def cache_root() -> Path:
    """The folder holding lhlib's caches (``$LHLIB_CACHE`` or ``~/.cache/lhlib``)."""
    return Path(os.environ.get("LHLIB_CACHE", Path.home() / ".cache" / "lhlib")).expanduser()


def _canonical(params: Any) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(params: dict[str, Any]) -> str:
    """SHA-256 (hex, first 32 characters) of the canonical JSON of ``params``."""
    payload = _canonical({"cache_format": CACHE_FORMAT, **params})
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    """SHA-256 of the tensors' dtypes, shapes and bytes: identifies a dataset in a cache key."""
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:32]


def atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _path(kind: str, params: dict[str, Any]) -> Path:
    return cache_root() / "store" / kind / f"{cache_key(params)}.pt"


def load_result(kind: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result for ``(kind, params)``, or ``None`` if there is none (or it is unreadable)."""
    path = _path(kind, params)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 -- a file from another torch version or a damaged disk: recompute it
        return None


def cached(
    kind: str, params: dict[str, Any], compute: Callable[[], dict[str, Any]], *, enabled: bool = True
) -> dict[str, Any]:
    """``compute()``'s result, from the store when ``params`` were computed before.

    ``compute`` must return a dict of tensors, numbers, strings and lists/dicts of those (what
    ``torch.load(weights_only=True)`` reads back). Tensors are stored on the CPU.
    """
    if enabled:
        result = load_result(kind, params)
        if result is not None:
            return result
    result = compute()
    if enabled:
        store_result(kind, params, result)
    return result


def store_result(kind: str, params: dict[str, Any], result: dict[str, Any]) -> None:
    """Write ``result`` (tensors moved to the CPU) atomically under the key of ``(kind, params)``."""
    stored = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in result.items()}
    stored["_params"] = _canonical(params)
    atomic_write_bytes(_path(kind, params), lambda file: torch.save(stored, file))
