"""load_pixels: every supported format gives float32 (H, W) in [0, 1]; every bad file a
one-line BadRecord that never shows DICOM header values."""

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import JPEG2000Lossless

from medxgan.ingest.pixels import load_pixels
from medxgan.ingest.records import BadRecord

from .helpers import BIRTH_DATE, PATIENT_ID, PATIENT_NAME, write_dicom, write_png

RAMP8 = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))           # (48, 64), 0..252
RAMP16 = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 13)       # 0..39923
EXPECT8 = (RAMP8 / 252.0).astype(np.float32)
EXPECT16 = (RAMP16 / RAMP16.max()).astype(np.float32)


def test_png_8bit(tmp_path):
    x, bits = load_pixels(write_png(str(tmp_path / "a.png"), RAMP8))
    assert x.dtype == np.float32 and x.shape == (48, 64) and bits == 8
    np.testing.assert_allclose(x, EXPECT8, atol=1e-6)


def test_png_16bit(tmp_path):
    x, bits = load_pixels(write_png(str(tmp_path / "a.png"), RAMP16))
    assert bits == 16
    np.testing.assert_allclose(x, EXPECT16, atol=1e-6)


@pytest.mark.parametrize("channels", [3, 4])
def test_png_grey_stored_as_rgb_or_rgba(tmp_path, channels):
    rgb = np.repeat(RAMP8[..., None], channels, axis=2)
    if channels == 4:
        rgb[..., 3] = 255
    x, _ = load_pixels(write_png(str(tmp_path / "a.png"), rgb))
    np.testing.assert_allclose(x, EXPECT8, atol=1e-6)


def test_png_coloured_refused(tmp_path):
    rgb = np.repeat(RAMP8[..., None], 3, axis=2)
    rgb[10, 10, 0] = 7
    with pytest.raises(BadRecord, match="RGB image where greyscale is expected"):
        load_pixels(write_png(str(tmp_path / "a.png"), rgb))


def test_jpeg_grey(tmp_path):
    img = np.kron(np.array([[0, 255], [255, 0]], np.uint8), np.ones((16, 16), np.uint8))
    p = str(tmp_path / "a.jpg")
    Image.fromarray(img).save(p, quality=95)
    x, bits = load_pixels(p)
    assert bits == 8 and x.shape == (32, 32)
    assert np.abs(x - img / 255.0).mean() < 0.05


@pytest.mark.parametrize("case,reason", [
    ("missing", "missing file"), ("empty", "empty file"), ("truncated", "corrupt"),
    ("text", "unsupported file format"), ("constant", "constant image"),
    ("huge", "too large"),
])
def test_bad_png_files(tmp_path, case, reason):
    p = str(tmp_path / "a.png")
    if case == "empty":
        open(p, "wb").close()
    elif case == "truncated":
        data = open(write_png(p, RAMP16), "rb").read()
        open(p, "wb").write(data[: len(data) // 2])
    elif case == "text":
        p = str(tmp_path / "a.txt")
        open(p, "w").write("not an image")
    elif case == "constant":
        write_png(p, np.full((8, 8), 9, np.uint8))
    elif case == "huge":
        write_png(p, RAMP8)
    with pytest.raises(BadRecord, match=reason):
        load_pixels(p, max_pixels=48 * 64 - 1 if case == "huge" else 10**8)


def test_animated_png_refused(tmp_path):
    p = str(tmp_path / "a.png")
    frames = [Image.fromarray(RAMP8), Image.fromarray(RAMP8[::-1].copy())]
    frames[0].save(p, save_all=True, append_images=frames[1:])
    with pytest.raises(BadRecord, match="multi-frame image"):
        load_pixels(p)


# -------------------------------------------------------------------------------- DICOM
def test_dicom_monochrome2_8bit(tmp_path):
    x, bits = load_pixels(write_dicom(str(tmp_path / "a.dcm"), RAMP8))
    assert bits == 8
    np.testing.assert_allclose(x, EXPECT8, atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path):
    x, _ = load_pixels(write_dicom(str(tmp_path / "a.dcm"), RAMP8, photometric="MONOCHROME1"))
    np.testing.assert_allclose(x, 1.0 - EXPECT8, atol=1e-6)


def test_dicom_16bit_rescale_slope_intercept(tmp_path):
    # a negative slope flips the order of intensities: proof that the Modality LUT ran
    raw = (RAMP16 // 16).astype(np.uint16)                                 # 12-bit data
    x, bits = load_pixels(write_dicom(str(tmp_path / "a.dcm"), raw, bits=12,
                                      slope=-2.0, intercept=1000.0))
    assert bits == 12
    np.testing.assert_allclose(x, 1.0 - raw / raw.max(), atol=1e-6)


def test_dicom_signed(tmp_path):
    raw = (RAMP16.astype(np.int32) - 20000).astype(np.int16)               # -20000..19923
    x, _ = load_pixels(write_dicom(str(tmp_path / "a.dcm"), raw))
    assert x[0, 0] == 0.0 and x[-1, -1] == 1.0                             # not wrapped
    np.testing.assert_allclose(x, EXPECT16, atol=1e-6)


@pytest.mark.parametrize("case,reason", [
    ("multiframe", "multi-frame DICOM"), ("nopixels", "DICOM without pixel data"),
    ("truncated", "truncated"), ("empty", "empty file"), ("compressed", "JPEG 2000"),
    ("rgb", "RGB image where greyscale is expected"), ("huge", "too large"),
    ("garbage", "DICOM"),
])
def test_bad_dicoms(tmp_path, case, reason):
    p = str(tmp_path / "a.dcm")
    if case == "multiframe":
        write_dicom(p, np.stack([RAMP8, RAMP8]), frames=2)
    elif case == "nopixels":
        write_dicom(p, RAMP8, pixel_data=False)
    elif case == "truncated":
        data = open(write_dicom(p, RAMP16), "rb").read()
        open(p, "wb").write(data[: len(data) - 3000])
    elif case == "empty":
        open(p, "wb").close()
    elif case == "compressed":
        write_dicom(p, RAMP8, transfer_syntax=JPEG2000Lossless, raw_bytes=b"\xff\x4f" + b"\0" * 64)
    elif case == "rgb":
        from pydicom import dcmread
        write_dicom(p, RAMP8)
        ds = dcmread(p)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.PixelData = np.repeat(RAMP8[..., None], 3, 2).tobytes()
        ds.save_as(p)
    elif case == "huge":
        write_dicom(p, RAMP8)
    elif case == "garbage":
        open(p, "wb").write(b"\x00" * 128 + b"DICM" + b"\x07\x13" * 50)
    with pytest.raises(BadRecord, match=reason) as exc:
        load_pixels(p, max_pixels=100 if case == "huge" else 10**8)
    msg = str(exc.value)
    assert "\n" not in msg
    for secret in (PATIENT_NAME, PATIENT_ID, BIRTH_DATE, "Zebulon"):
        assert secret not in msg
