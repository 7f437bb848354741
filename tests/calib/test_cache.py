"""TensorRT calibration cache: the documented text format, round trip, bad files."""

from __future__ import annotations

import pytest
from tgir.calib.cache import read_calibration_cache, version_number, write_calibration_cache

from tgir.errors import TgirUserError


def test_version_numbers():
    assert version_number("8.5.2") == 8502
    assert version_number("8.6.1") == 8601
    assert version_number("10.3.0") == 100300
    with pytest.raises(TgirUserError, match="removed implicit INT8 calibration"):
        version_number("11.0.0")
    with pytest.raises(TgirUserError, match=r"expected MAJOR\.MINOR\.PATCH"):
        version_number("ten")


def test_format_and_round_trip(tmp_path):
    # amax 15.875 -> scale 15.875 / 127 = 0.125 = 0x3e000000; amax 127 -> scale 1.0 = 0x3f800000.
    path = write_calibration_cache(tmp_path / "c.cache", {"tokens": 15.875, "images": 127.0}, tensorrt="8.5.2")
    assert path.read_text() == "TRT-8502-EntropyCalibration2\nimages: 3f800000\ntokens: 3e000000\n"
    ranges = {"a/b:0": 3.14159, "x": 1e-3}
    write_calibration_cache(tmp_path / "r.cache", ranges)
    version, algorithm, got = read_calibration_cache(tmp_path / "r.cache")
    assert (version, algorithm) == (100300, "EntropyCalibration2")
    assert got.keys() == ranges.keys()
    for name, amax in ranges.items():
        assert got[name] == pytest.approx(amax, rel=1e-6)  # float32 scale


def test_bad_caches(tmp_path):
    bad = tmp_path / "bad.cache"
    bad.write_text("hello\n")
    with pytest.raises(TgirUserError, match="not a TensorRT calibration cache"):
        read_calibration_cache(bad)
    bad.write_text("TRT-8502-EntropyCalibration2\nx: 3e000000\ny = 12\n")
    with pytest.raises(TgirUserError, match=r"bad.cache:3: expected '<tensor>: <hex scale>'"):
        read_calibration_cache(bad)
    with pytest.raises(TgirUserError, match="must be positive"):
        write_calibration_cache(tmp_path / "z.cache", {"x": 0.0})
    with pytest.raises(TgirUserError, match="unknown calibration algorithm"):
        write_calibration_cache(tmp_path / "z.cache", {"x": 1.0}, algorithm="Magic")
