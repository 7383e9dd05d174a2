"""openpi's msgpack-numpy frame encoding (checked against openpi-client's own packer in test_serving_client.py)."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from tau_policy.serving import FrameError, pack, unpack


def test_arrays_and_scalars_round_trip() -> None:
    obj = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.uint8(7), "c": [1, "x", {"d": 2.5}],
           "e": np.zeros((0, 3), dtype=np.int64), "f": np.asfortranarray(np.ones((2, 3)))}
    back = unpack(pack(obj))
    np.testing.assert_array_equal(back["a"], obj["a"])
    assert back["a"].dtype == np.float32 and back["b"] == 7 and back["b"].dtype == np.uint8
    assert back["c"] == [1, "x", {"d": 2.5}] and back["e"].shape == (0, 3)
    np.testing.assert_array_equal(back["f"], obj["f"])


def test_array_layout_is_openpis_tagged_map() -> None:
    raw = msgpack.unpackb(pack({"x": np.array([[1, 2]], dtype="<i2")}))
    assert raw == {"x": {b"__ndarray__": True, b"data": b"\x01\x00\x02\x00", b"dtype": "<i2", b"shape": [1, 2]}}
    raw = msgpack.unpackb(pack(np.float32(0.5)))  # (np.float64 is a float: packed as one)
    assert raw == {b"__npgeneric__": True, b"data": 0.5, b"dtype": "<f4"}


def tagged(dtype: str, shape: list, data: bytes) -> bytes:
    return msgpack.packb({b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape})


@pytest.mark.parametrize(("frame", "message"), [
    (tagged("|O", [1], b"\x00" * 8), "not accepted over the wire"),
    (tagged("|V8", [1], b"\x00" * 8), "not accepted over the wire"),
    (tagged("<f4", [4], b"\x00" * 8), "does not match its data"),
    (tagged("<f4", [-1], b""), "bad array shape"),
    (tagged("nonsense", [1], b"\x00"), "bad numpy dtype"),
    (b"\xc1", "not msgpack"),
    (msgpack.packb({"a": 1}) + b"\x01", "not msgpack"),
])
def test_bad_frames_are_frame_errors(frame: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        unpack(frame)


def test_object_arrays_are_not_sent() -> None:
    with pytest.raises(TypeError, match="cannot send numpy dtype object"):
        pack({"x": np.array([object()])})
