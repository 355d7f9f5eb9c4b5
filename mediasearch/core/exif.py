"""What a photo says about itself in EXIF: when it was taken, with which camera, and where.

Read from the image bytes the transform already holds (`Image.open` parses the headers only; no
pixel is decoded again). Each field is read on its own and a malformed one is recorded as None: a
bad EXIF block never fails an ingest, and one bad tag does not lose the others.

Times: `DateTimeOriginal` (else `DateTime`) is the camera's wall clock. With `OffsetTimeOriginal`
(EXIF 2.31) it is converted to UTC; without, the wall-clock time is kept as if it were UTC, so a
filter on "photos of 2024-05-01" finds what the camera's clock said, whatever its zone.
"""

from __future__ import annotations

import io
import logging
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

from PIL import ExifTags, Image

from mediasearch.core.records import PHOTO_TIMES

log = logging.getLogger(__name__)

# EXIF tag numbers (EXIF 2.32, CIPA DC-008): IFD0, the Exif IFD and the GPS IFD.
MAKE, MODEL, DATE_TIME = 0x010F, 0x0110, 0x0132
DATE_TIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
GPS_LATITUDE_REF, GPS_LATITUDE, GPS_LONGITUDE_REF, GPS_LONGITUDE = 1, 2, 3, 4

MAX_CAMERA_CHARS = 128
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")

T = TypeVar("T")


@dataclass(frozen=True)
class PhotoMetadata:
    """The EXIF fields the index keeps; None where the photo does not say (or says it badly)."""

    taken_at: datetime | None = None  # timezone-aware, UTC
    camera: str | None = None  # make and model, e.g. "Canon EOS 5D"
    gps_lat: float | None = None  # decimal degrees, south negative
    gps_lon: float | None = None  # decimal degrees, west negative


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = " ".join(value.replace("\x00", " ").split())
    return text or None


def parse_exif_datetime(value: Any, offset: Any = None) -> datetime | None:
    """`YYYY:MM:DD HH:MM:SS` (+ an optional `+HH:MM` offset) as an aware UTC datetime; None if invalid
    (blank, zeroed `0000:00:00 00:00:00`, out of range)."""
    text = _text(value)
    if text is None:
        return None
    try:
        when = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    zone: timezone = UTC
    match = _OFFSET.match(_text(offset) or "")
    if match:
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        if delta <= timedelta(hours=14):
            zone = timezone(-delta if sign == "-" else delta)
    utc = when.replace(tzinfo=zone).astimezone(UTC)
    # A clock set to year 1 or 9999 says nothing, and the backends compare only these years.
    return utc if PHOTO_TIMES[0] <= utc < PHOTO_TIMES[1] else None


def _ratio(value: Any) -> float:
    # Pillow gives IFDRational (or a (num, den) pair from older writers).
    if isinstance(value, tuple) and len(value) == 2:
        return float(value[0]) / float(value[1])
    return float(value)


def gps_degrees(dms: Any, ref: Any, limit: float) -> float | None:
    """Degrees, minutes, seconds and a hemisphere (N/S, E/W) as signed decimal degrees; None when
    malformed, missing its hemisphere, or beyond `limit` (90 for latitude, 180 for longitude)."""
    hemisphere = (_text(ref) or "").upper()
    if hemisphere not in {"N", "S", "E", "W"}:
        return None
    try:
        parts = [_ratio(p) for p in dms]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if len(parts) != 3 or not all(math.isfinite(p) and p >= 0 for p in parts):
        return None
    if parts[1] >= 60 or parts[2] >= 60:
        return None
    degrees = parts[0] + parts[1] / 60 + parts[2] / 3600
    if degrees > limit:
        return None
    degrees = round(degrees, 7)  # ~1 cm: what a GPS fix means, without float noise
    return -degrees if hemisphere in {"S", "W"} else degrees


def _camera(ifd0: Any) -> str | None:
    make, model = _text(ifd0.get(MAKE)), _text(ifd0.get(MODEL))
    if make and model and model.lower().startswith(make.lower()):
        make = None  # "Canon" + "Canon EOS 5D" is "Canon EOS 5D", not "Canon Canon EOS 5D"
    camera = " ".join(p for p in (make, model) if p)
    return camera[:MAX_CAMERA_CHARS] or None


def _guarded(read: Callable[[], T], what: str) -> T | None:
    try:
        return read()
    except Exception as exc:  # a malformed tag costs its own field, never the ingest
        log.debug("unreadable EXIF %s: %s", what, exc)
        return None


def read_exif(data: bytes) -> PhotoMetadata:
    """The photo's EXIF metadata, or an empty `PhotoMetadata` when it has none or it cannot be read."""
    try:
        # Pillow warns about a corrupt block as it reads it; that is answered here by recording nothing.
        with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as image:
            warnings.simplefilter("ignore")
            exif = image.getexif()
    except Exception:
        return PhotoMetadata()
    if not exif:
        return PhotoMetadata()
    sub = _guarded(lambda: exif.get_ifd(ExifTags.IFD.Exif), "Exif IFD") or {}
    gps = _guarded(lambda: exif.get_ifd(ExifTags.IFD.GPSInfo), "GPS IFD") or {}
    taken = _guarded(
        lambda: (
            parse_exif_datetime(sub.get(DATE_TIME_ORIGINAL), sub.get(OFFSET_TIME_ORIGINAL))
            or parse_exif_datetime(exif.get(DATE_TIME))
        ),
        "date",
    )
    lat = _guarded(lambda: gps_degrees(gps.get(GPS_LATITUDE), gps.get(GPS_LATITUDE_REF), 90.0), "latitude")
    lon = _guarded(
        lambda: gps_degrees(gps.get(GPS_LONGITUDE), gps.get(GPS_LONGITUDE_REF), 180.0), "longitude"
    )
    if lat is None or lon is None:
        lat = lon = None  # half a position is no position
    return PhotoMetadata(
        taken_at=taken,
        camera=_guarded(lambda: _camera(exif), "camera"),
        gps_lat=lat,
        gps_lon=lon,
    )


def exif_bytes(
    taken_at: datetime | None = None,
    offset: str | None = None,
    make: str | None = None,
    model: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
) -> bytes:
    """An EXIF block with these fields, as cameras write them (for the synthetic corpus and tests):
    pass it as `Image.save(..., exif=...)`."""
    exif = Image.Exif()
    if make:
        exif[MAKE] = make
    if model:
        exif[MODEL] = model
    if taken_at is not None:
        stamp = taken_at.strftime("%Y:%m:%d %H:%M:%S")
        exif[DATE_TIME] = stamp
        sub: dict[int, Any] = {DATE_TIME_ORIGINAL: stamp}
        if offset:
            sub[OFFSET_TIME_ORIGINAL] = offset
        exif[ExifTags.IFD.Exif] = sub
    if lat is not None and lon is not None:
        exif[ExifTags.IFD.GPSInfo] = {
            GPS_LATITUDE_REF: "N" if lat >= 0 else "S",
            GPS_LATITUDE: _dms(abs(lat)),
            GPS_LONGITUDE_REF: "E" if lon >= 0 else "W",
            GPS_LONGITUDE: _dms(abs(lon)),
        }
    return exif.tobytes()


def _dms(degrees: float) -> tuple[float, float, float]:
    whole = int(degrees)
    minutes_f = (degrees - whole) * 60
    minutes = int(minutes_f)
    return (float(whole), float(minutes), round((minutes_f - minutes) * 60, 4))
