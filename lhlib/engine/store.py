"""A results store for expensive computations, keyed by everything that determines them.

A result is a flat ``dict`` of tensors (plus JSON-able metadata) saved with :func:`torch.save` and
read back with ``torch.load(weights_only=True)``, so loading never runs arbitrary code. The key is
the SHA-256 of the canonical JSON of the parameters (and of ``CACHE_FORMAT``), so a changed
parameter never reuses a stale result. Writes go to a temporary file in the same folder and are
moved into place with :func:`os.replace`, so a run killed midway leaves either nothing or a complete
file, and the next run resumes from whatever finished; temporary files that a killed run left behind
are removed.

Every entry is verified when read: the file starts with the SHA-256 of the bytes that follow, and
the entry holds the record of the parameters that made it. An entry whose bytes or record do not
match (a flipped bit, a truncated copy, a file moved under another key, an older format) is
discarded and recomputed, and one line on stderr says so.

The checks detect damage; they do not authenticate. Whoever can write the store can write an entry
that passes them (a digest of its own bytes and a matching record), so a store is trusted as far as
the account that owns it, like any cache. The data are different: lhlib.engine.data checks them
against digests pinned in the code.

The store lives in ``$LHLIB_CACHE`` or, by default, ``~/.cache/lhlib``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

# torch is imported inside the functions that use it: lhlib.engine.data's dataset checks import this
# module and must run without torch (see lhlib.engine.settings).
if TYPE_CHECKING:
    import torch

__all__ = [
    "NotARegularFile",
    "atomic_write_bytes",
    "cache_key",
    "cache_root",
    "cached",
    "load_result",
    "read_regular_file",
    "remove_stale_parts",
    "store_result",
    "tensor_fingerprint",
]


# Bump when a change in lhlib alters what a cached computation returns.
CACHE_FORMAT = 1


# The first line of every entry; the second is the SHA-256 (hex) of the rest of the file.
ENTRY_HEADER = b"lhlib results store entry, format 2\n"


STALE_PART_SECONDS = 3600
"""Age in seconds after which a ``.part`` file is taken to be left by a killed write."""


def cache_root() -> Path:
    """The folder holding lhlib's caches (``$LHLIB_CACHE`` or ``~/.cache/lhlib``; an empty value counts as unset).

    Returns:
        The folder's path, ``~`` expanded; it is not created here.
    """
    return Path(os.environ.get("LHLIB_CACHE") or Path.home() / ".cache" / "lhlib").expanduser()


def _canonical(params: Any) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(params: dict[str, Any]) -> str:
    """The key of ``params`` in the store: SHA-256 of their canonical JSON.

    The canonical JSON has sorted keys, no spaces, ``str()`` for what JSON cannot hold, and
    ``CACHE_FORMAT`` added, so bumping it retires every entry.

    Args:
        params: Everything that determines the result, JSON-able.

    Returns:
        The first 32 hex characters of the SHA-256.
    """
    payload = _canonical({"cache_format": CACHE_FORMAT, **params})
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    """SHA-256 of the tensors' dtypes, shapes and bytes: identifies a dataset in a cache key.

    Args:
        *tensors: The tensors, in order (on any device; they are read on the CPU).

    Returns:
        The first 32 hex characters of the SHA-256.
    """
    import torch

    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:32]


class NotARegularFile(OSError):
    """A path the store or a data reader would read is there, but is not a regular file."""


def read_regular_file(path: Path) -> bytes:
    """The bytes of ``path``, refusing without blocking what is not a regular file.

    A directory, a FIFO (whose read would wait forever for a writer) or a link to a device such as
    ``/dev/zero`` (endless) is refused by its ``stat``, before it is opened.

    Args:
        path: The file to read.

    Returns:
        Its bytes.

    Raises:
        FileNotFoundError: when nothing is at ``path``.
        NotARegularFile: when something other than a regular file is.
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise NotARegularFile(f"{path} is not a regular file")
    return Path(path).read_bytes()


def _ordinary_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file (0o666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def remove_stale_parts(folder: Path) -> list[Path]:
    """Delete the temporary ``.part`` files in ``folder`` older than ``STALE_PART_SECONDS``.

    Args:
        folder: The folder to clean (not its subfolders).

    Returns:
        The paths of the files deleted.
    """
    now, removed = time.time(), []
    for part in Path(folder).glob(".*.part"):
        with contextlib.suppress(FileNotFoundError):
            if now - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()
                removed.append(part)
    return removed


def atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then move it onto ``path``.

    The file gets ordinary permissions (as ``open`` would give it), and stale temporary files that
    killed writes left in the folder are removed first. The folder is created if needed. If ``write``
    raises, the temporary file is deleted, ``path`` is left as it was and the error propagates.

    Args:
        path: Where the file ends up.
        write: Writes the content to the binary file object it is given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path.parent)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, _ordinary_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _path(kind: str, params: dict[str, Any]) -> Path:
    return cache_root() / "store" / kind / f"{cache_key(params)}.pt"


def _verified(data: bytes, params: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """``(result, "")`` for an entry whose checksum and parameter record match, else ``(None, why)``."""
    if not data.startswith(ENTRY_HEADER):
        return None, "it has no checksum (an older format or not an entry)"
    digest, _, payload = data[len(ENTRY_HEADER) :].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None, "its bytes do not match their SHA-256"
    import torch

    try:
        result = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 -- checksum right but unreadable: written by another torch
        return None, "torch cannot read it"
    if not isinstance(result, dict) or result.get("_params") != _canonical(params):
        return None, "it was made by other parameters"
    return result, ""


def load_result(kind: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result for ``(kind, params)``, verified.

    An entry that fails verification is deleted, and one line on stderr names it and why; something that
    is not a regular file in an entry's place (a directory, a FIFO) is ignored, unread, with one line.

    Args:
        kind: The kind of result, a subfolder of the store (e.g. ``"trained_network"``).
        params: Everything that determined the result (see :func:`cache_key`).

    Returns:
        The stored dict (tensors on the CPU), or ``None`` if there is none or it fails verification.
    """
    path = _path(kind, params)
    try:
        data = read_regular_file(path)
    except (FileNotFoundError, NotADirectoryError):  # no entry (or no folder for one)
        return None
    except OSError as error:  # a directory, a FIFO, a device, unreadable: not an entry, and not removable here
        print(f"lhlib.engine.store: ignored the stored {kind} entry {path.stem[:12]} ({error}); recomputing it",
              file=sys.stderr)  # fmt: skip
        return None
    result, problem = _verified(data, params)
    if result is None:
        path.unlink(missing_ok=True)
        print(
            f"lhlib.engine.store: discarded the stored {kind} entry {path.stem[:12]} ({problem}); recomputing it",
            file=sys.stderr,
        )
    return result


def cached(
    kind: str, params: dict[str, Any], compute: Callable[[], dict[str, Any]], *, enabled: bool = True
) -> dict[str, Any]:
    """``compute()``'s result, from the store when ``params`` were computed before.

    ``compute`` must return a dict of tensors, numbers, strings and lists/dicts of those (what
    ``torch.load(weights_only=True)`` reads back). Tensors are stored on the CPU.

    Args:
        kind: The kind of result, a subfolder of the store.
        params: Everything that determines the result (see :func:`cache_key`).
        compute: Computes the result when the store has none.
        enabled: Whether to use the store at all; ``False`` always computes and stores nothing.

    Returns:
        The stored result (with its ``"_params"`` record) when there is one, else ``compute()``'s own,
        which is returned even when it cannot be stored (a read-only store: one line on stderr says so).
    """
    if enabled:
        result = load_result(kind, params)
        if result is not None:
            return result
    result = compute()
    if enabled:
        try:
            store_result(kind, params, result)
        except OSError as error:  # a read-only store, or a non-file in the entry's place: keep the result
            print(f"lhlib.engine.store: could not store the {kind} entry ({error}); using it without storing",
                  file=sys.stderr)  # fmt: skip
    return result


def store_result(kind: str, params: dict[str, Any], result: dict[str, Any]) -> None:
    """Write ``result`` (tensors moved to the CPU) atomically under the key of ``(kind, params)``.

    The entry is the header line, the SHA-256 of the :func:`torch.save` payload and the payload, which
    also records ``params`` (under ``"_params"``) for :func:`load_result` to check.

    Args:
        kind: The kind of result, a subfolder of the store.
        params: Everything that determined the result (see :func:`cache_key`).
        result: A dict of tensors, numbers, strings and lists/dicts of those.
    """
    import torch

    stored = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in result.items()}
    stored["_params"] = _canonical(params)
    buffer = io.BytesIO()
    torch.save(stored, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    atomic_write_bytes(_path(kind, params), lambda file: file.write(ENTRY_HEADER + digest + b"\n" + payload))
