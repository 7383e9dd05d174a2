"""openpi's websocket frame encoding: msgpack maps in which numpy values travel as tagged maps.

An array is `{b"__ndarray__": True, b"data": <raw C-order bytes>, b"dtype": <dtype.str>, b"shape": [...]}` and a
numpy scalar `{b"__npgeneric__": True, b"data": <item>, b"dtype": <dtype.str>}`, exactly as
openpi_client.msgpack_numpy (0.1.2) packs them, so replies decode with openpi's client and its requests decode here.
Decoding accepts only plain numeric, boolean and string dtypes: an object dtype from the wire would read pointers.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

# Kinds a frame may carry: bool, signed/unsigned int, float, complex, bytes, unicode. Never "O" (object), "V"
# (void/structured), "M"/"m" (datetime) or "c" (char).
_SAFE_KINDS = frozenset("biufcSU")


class FrameError(ValueError):
    """A frame that is not openpi msgpack (undecodable bytes, a bad array header, an unsafe dtype)."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        if obj.dtype.kind not in _SAFE_KINDS:
            raise TypeError(f"cannot send numpy dtype {obj.dtype} over the wire")
        if isinstance(obj, np.ndarray):
            return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _dtype(tag: Any) -> np.dtype:
    try:
        dtype = np.dtype(tag.decode() if isinstance(tag, bytes) else tag)
    except TypeError as error:
        raise FrameError(f"bad numpy dtype {tag!r} in frame: {error}") from error
    if dtype.kind not in _SAFE_KINDS:
        raise FrameError(f"numpy dtype {dtype} is not accepted over the wire (numeric, bool or string only)")
    return dtype


def _decode(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        dtype, shape = _dtype(obj.get(b"dtype")), obj.get(b"shape")
        if not isinstance(shape, list | tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise FrameError(f"bad array shape {shape!r} in frame")
        try:
            return np.ndarray(buffer=obj[b"data"], dtype=dtype, shape=tuple(shape))
        except (KeyError, TypeError) as error:
            raise FrameError(f"array of dtype {dtype} and shape {tuple(shape)} does not match its data: {error}") \
                from error
    if b"__npgeneric__" in obj:
        return _dtype(obj.get(b"dtype")).type(obj.get(b"data"))
    return obj


def pack(obj: Any) -> bytes:
    """One binary frame: `obj` (dicts, lists, numbers, strings, numpy arrays and scalars) as openpi msgpack."""
    return msgpack.packb(obj, default=_encode)


def unpack(frame: bytes) -> Any:
    """The object of one binary frame; FrameError when it is not openpi msgpack."""
    try:
        return msgpack.unpackb(frame, object_hook=_decode)
    except FrameError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise FrameError(f"frame is not msgpack: {error}") from error
