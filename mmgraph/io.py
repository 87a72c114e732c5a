"""Checksummed, atomic files for checkpoints and saved models.

Training checkpoints (and the model files of mmgraph's model format 1; model files are now safetensors, see
:mod:`mmgraph.models.serialization`) have the same envelope, a plain ``torch.save`` dict that
``torch.load(path, weights_only=True)`` reads:

``{"mmgraph_file": FORMAT, "kind": "checkpoint" | "model", "sha256": hex digest, "payload": UInt8Tensor[n]}``

where ``payload`` holds the ``torch.save`` bytes of the actual content and ``sha256`` their SHA-256. The digest
is what catches corruption: PyTorch's zip reader does not verify its CRCs, so without it most single-bit flips of a
``.pt`` file load silently with changed tensors. :func:`load_file` verifies the digest before it deserialises the
payload (again with ``weights_only=True``), and every failure is a :class:`CorruptFileError` naming the path.

Writes are atomic (:func:`save_file`; :func:`write_atomic` for the safetensors model files and ONNX exports;
:func:`write_text` for reports): a temporary file in the same directory, ``fsync``, ``os.replace``, then an ``fsync``
of the directory; a crash leaves the previous file or the new one, never a torn one. Temporary files left by killed
writers of the same file (``<name>.tmp<pid>`` of a process that no longer runs) are removed on the next write.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

FORMAT = 1
KINDS = ("checkpoint", "model")


class CorruptFileError(ValueError):
    """A checkpoint or model file that cannot be trusted: truncated, bit-flipped, not an mmgraph file, or of the
    wrong kind. The message names the path."""


class IncompatibleFileError(ValueError):
    """An intact mmgraph file that this version cannot use: written by a newer mmgraph (a later format, a config
    key this version does not know) or whose recorded settings and weights disagree. The message names the path
    and what differs."""


def save_file(path: str | os.PathLike, payload: Mapping[str, Any], kind: str) -> Path:
    """Write ``payload`` (a dict of tensors, numbers, strings, lists and dicts) atomically to ``path``.

    Args:
        path: destination; parent directories are created.
        payload: the content; must be loadable with ``torch.load(weights_only=True)``.
        kind: ``"checkpoint"`` or ``"model"``; :func:`load_file` refuses a file of another kind.

    Returns:
        the path written.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {list(KINDS)}, got {kind!r}")
    buffer = io.BytesIO()
    torch.save(dict(payload), buffer)
    data = buffer.getbuffer()
    envelope = {"mmgraph_file": FORMAT, "kind": kind, "sha256": hashlib.sha256(data).hexdigest(),
                "payload": torch.frombuffer(bytearray(data), dtype=torch.uint8)}
    return _write_atomically(Path(path), lambda handle: torch.save(envelope, handle))


def write_atomic(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write ``data`` atomically to ``path`` (the safetensors model files, ONNX exports); parent directories are
    created. Returns the path written."""
    return _write_atomically(Path(path), lambda handle: handle.write(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically to ``path`` (reports, CSV); parent directories are created."""
    return _write_atomically(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def _write_atomically(path: Path, write: Callable[[BinaryIO], Any]) -> Path:
    """``write(handle)`` into a temporary file beside ``path`` (``<name>.tmp<pid>``), ``fsync``, ``os.replace``,
    ``fsync`` the folder. Parent directories are created; temporaries left by killed writers are removed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    return path


def load_file(path: str | os.PathLike, kind: str, map_location: str | torch.device | None = "cpu"
              ) -> dict[str, Any]:
    """Read and verify a file written by :func:`save_file`; return its payload.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptFileError: the file is truncated or corrupt (unreadable, checksum mismatch), is not an mmgraph file,
            or holds another ``kind``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    size = path.stat().st_size
    try:
        envelope = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to parse the envelope means the bytes are damaged
        raise CorruptFileError(f"{path}: corrupt or truncated file ({size} bytes), cannot be read: "
                               f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                               ) from error
    version = envelope.get("mmgraph_file") if isinstance(envelope, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT:
        raise IncompatibleFileError(f"{path}: written by a newer mmgraph (file format {version}; this mmgraph reads "
                                    f"format {FORMAT}); upgrade mmgraph to read it")
    if not (isinstance(envelope, dict) and version == FORMAT
            and isinstance(envelope.get("payload"), torch.Tensor) and isinstance(envelope.get("sha256"), str)):
        raise CorruptFileError(f"{path}: not an mmgraph {kind} file (format {FORMAT}), or its header is corrupt")
    if envelope.get("kind") != kind:
        raise CorruptFileError(f"{path}: expected an mmgraph {kind} file, got a {envelope.get('kind')!r} file")
    data = envelope["payload"].numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != envelope["sha256"]:
        raise CorruptFileError(f"{path}: corrupt file: the SHA-256 of its payload does not match the one recorded "
                               "when it was written")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise CorruptFileError(f"{path}: corrupt payload despite a matching checksum: {error}") from error


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``<name>.tmp<pid>`` files of ``path`` whose writer process is gone (killed mid-write)."""
    prefix = f"{path.name}.tmp"
    if not path.parent.is_dir():
        return
    for candidate in path.parent.glob(f"{path.name}.tmp*"):
        pid = candidate.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            candidate.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
