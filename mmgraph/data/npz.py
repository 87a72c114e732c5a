"""Reading the ``.npz`` layout of ``mmgraph train --data`` (:meth:`MultiModalDataset.from_npz
<mmgraph.data.MultiModalDataset.from_npz>`), in memory or memory-mapped.

The layout: one array per modality under its name (``[N, ...]``), the targets under ``label`` (or the keys named in
``targets``; integer arrays are classes, float arrays regression, string arrays class names), optional boolean
``<modality>_mask`` arrays ``[N]`` (True = present) and ``<modality>_step_mask`` arrays ``[N, T]`` (True = real step)
of padded sequences.

Memory mapping (``mmap=True``): an ``.npz`` is a zip archive. A member stored without compression (``np.savez``) is
mapped in place, at its offset inside the archive; a compressed member (``np.savez_compressed``) is first
decompressed, in chunks, to ``.<file>.mmap/<key>.npy`` next to the file (reused while the archive's size and
modification time are unchanged) and mapped from there. Mapped arrays are copy-on-write: nothing is read until a
batch needs its rows. Targets and masks are small and read into memory.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["open_npz", "read_npz"]

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header: 30 bytes, then the name and the extra field
_CHUNK = 1 << 24


def read_npz(path: str | Path, targets: tuple[str, ...] | list[str] = ("label",), mmap: bool = False,
             arg: str = "path") -> tuple[dict, dict, dict, dict]:
    """``(features, targets, masks, step_masks)`` of an ``.npz`` in the layout above: ``{modality: ndarray [N, ...]}``
    (memory maps with ``mmap=True``), ``{task: ndarray [N]}``, ``{modality: bool [N]}``, ``{modality: bool [N, T]}``.
    Errors name ``arg`` (the argument or command-line flag that gave the path)."""
    arrays = open_npz(path, mmap=mmap, arg=arg)
    missing = [key for key in targets if key not in arrays]
    if missing:
        raise ValueError(f"{arg}: {str(path)!r} has no target arrays {missing} (--targets); its keys are "
                         f"{sorted(arrays)}")
    labels = {key: np.asarray(arrays.pop(key)) for key in targets}
    steps = {key[:-len("_step_mask")]: np.asarray(arrays.pop(key)) for key in list(arrays)
             if key.endswith("_step_mask")}
    masks = {key[:-len("_mask")]: np.asarray(arrays.pop(key)) for key in list(arrays) if key.endswith("_mask")}
    for suffix, named in (("_mask", masks), ("_step_mask", steps)):
        unknown = [f"{name}{suffix}" for name in named if name not in arrays]
        if unknown:
            raise ValueError(f"{arg}: mask arrays {unknown} name no modality; modalities are {sorted(arrays)}")
    for name, mask in masks.items():
        if mask.dtype != np.bool_ or mask.shape != arrays[name].shape[:1]:
            raise ValueError(f"{arg}: {name}_mask: expected a boolean array of shape {arrays[name].shape[:1]}, got "
                             f"{mask.dtype} {mask.shape}")
    if not arrays:
        raise ValueError(f"{arg}: {str(path)!r} holds no modality arrays besides the targets {list(targets)}")
    flat = [name for name, array in arrays.items() if array.ndim < 2 and array.dtype.kind not in "US"]  # str: text
    if flat:
        raise ValueError(f"{arg}: {flat[0]!r} is one value per sample (shape {arrays[flat[0]].shape}); a modality "
                         "needs [N, F] features: name it in --targets if it is a target, or store it as [N, 1]")
    return arrays, labels, masks, steps


def open_npz(path: str | Path, mmap: bool = False, arg: str = "path") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` by key (memory maps with ``mmap=True``), never unpickling; a missing or damaged
    file is a ``ValueError`` naming ``arg`` and the path."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{arg}: no such file {str(path)!r}")
    try:
        return _mapped(path) if mmap else dict(np.load(path, allow_pickle=False))
    except Exception as error:  # noqa: BLE001 - a damaged zip fails in many ways (BadZipFile, EOFError, ...)
        reason = str(error).splitlines()[0] if str(error) else ""
        raise ValueError(f"{arg}: {str(path)!r} is not a readable .npz file (truncated, corrupt, or not written by "
                         f"numpy.savez: {type(error).__name__}: {reason})") from None


def _mapped(path: Path) -> dict[str, np.ndarray]:
    """Every member of the archive as a copy-on-write memory map (compressed members through the cache folder)."""
    arrays: dict[str, np.ndarray] = {}
    cache = path.with_name(f".{path.name}.mmap")
    stamp = {"size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[:-len(".npy")]
            if info.compress_type == zipfile.ZIP_STORED:
                raw.seek(info.header_offset)
                fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
                raw.seek(info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1])
                shape, fortran, dtype = _npy_header(raw, key)
                arrays[key] = np.memmap(path, dtype=dtype, mode="c", offset=raw.tell(), shape=shape,
                                        order="F" if fortran else "C")
            else:
                arrays[key] = np.load(_extract(archive, info, key, cache, stamp), mmap_mode="c", allow_pickle=False)
    return arrays


def _npy_header(handle, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(handle)
    if dtype.hasobject:
        raise ValueError(f"member {key!r} holds Python objects, which mmgraph does not unpickle")
    return shape, fortran, dtype


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, cache: Path, stamp: dict) -> Path:
    """Decompress one member to ``cache/<key>.npy`` in chunks (never the whole array in memory); reuse the file while
    the archive is unchanged."""
    target = cache / f"{key}.npy"
    marker = cache / f"{key}.json"
    if target.exists() and marker.exists() and json.loads(marker.read_text()) == stamp:
        return target
    cache.mkdir(exist_ok=True)
    with archive.open(info) as source:
        shape, fortran, dtype = _npy_header(source, key)
        out = np.lib.format.open_memmap(target, mode="w+", dtype=dtype, shape=shape, fortran_order=fortran)
        view = memoryview(out.reshape(-1, order="A").view(np.uint8)) if out.size else memoryview(b"")
        position = 0
        while position < len(view):
            read = source.readinto(view[position:position + _CHUNK])
            if not read:
                raise ValueError(f"member {key!r} is truncated")
            position += read
        out.flush()
        del view, out
    marker.write_text(json.dumps(stamp))
    return target
