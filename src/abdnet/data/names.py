"""Re-ID file names of the known data sets: the one definition of their patterns.

- Market-1501: ``0002_c1s1_000451_03.jpg``: pid, camera (1-based), sequence, frame, box.
- DukeMTMC-reID: ``0001_c2_f0046182.jpg``: pid, camera (1-based), frame.
- MARS (video): ``0001C1T0001F001.jpg``: pid (``00-1`` for junk), camera (1-based),
  tracklet, frame.
- DukeMTMC-VideoReID: ``0001_C2_F0001_X00001.jpg``: pid, camera (1-based), frame, then
  more (the pid and the tracklet are also the folder names).

Both start with ``<pid>_c<camera>``; cameras are numbered from 1 in the names, from 0 in
abdnet. The parsers match a whole file stem (``MARKET_STEM``, ``DUKE_STEM``);
``parse_name`` reads the labels of any name with that start (the frame when the name goes on
the Market or Duke way).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DUKE_EXAMPLE",
    "DUKE_STEM",
    "DUKE_VIDEO_EXAMPLE",
    "DUKE_VIDEO_STEM",
    "MARKET_EXAMPLE",
    "MARKET_STEM",
    "MARS_EXAMPLE",
    "MARS_STEM",
    "NameLabels",
    "parse_name",
]

_PID_CAM = r"(?P<pid>-?\d+)_c(?P<cam>\d+)"
_MARKET_FRAME = r"s\d+_(?P<market_frame>\d+)_"  # sequence, frame, then the box number
_DUKE_FRAME = r"_f(?P<duke_frame>\d+)"

MARKET_STEM = re.compile(rf"^{_PID_CAM}{_MARKET_FRAME}\d+$")
DUKE_STEM = re.compile(rf"^{_PID_CAM}{_DUKE_FRAME}$")
MARKET_EXAMPLE = "0002_c1s1_000451_03.jpg"
DUKE_EXAMPLE = "0001_c2_f0046182.jpg"
MARS_STEM = re.compile(r"^(?P<pid>\d+|\d*-1)C(?P<cam>\d)T(?P<tracklet>\d+)F(?P<frame>\d+)$")
MARS_EXAMPLE = "0001C1T0001F001.jpg"
DUKE_VIDEO_STEM = re.compile(r"^(?P<pid>\d+)_C(?P<cam>\d+)_F(?P<frame>\d+)(?:_.*)?$")
DUKE_VIDEO_EXAMPLE = "0001_C2_F0001_X00001.jpg"

_PREFIX = re.compile(rf"^{_PID_CAM}")
_WITH_FRAME = re.compile(rf"^{_PID_CAM}(?:{_MARKET_FRAME}|{_DUKE_FRAME})")


@dataclass(frozen=True)
class NameLabels:
    """What a Market/Duke-style file name says about the crop."""

    pid: int
    camid: int  # 0-based: the name's "c1" is camera 0
    frame: int | None  # video frame number, when the name carries one


def parse_name(path: str | Path) -> NameLabels | None:
    """pid, camera and frame of a Market-1501 / DukeMTMC-reID file name; None for any other."""
    name = Path(path).name
    m = _PREFIX.match(name)
    if m is None:
        return None
    f = _WITH_FRAME.match(name)
    frame = int(f.group("market_frame") or f.group("duke_frame")) if f else None
    return NameLabels(pid=int(m.group("pid")), camid=int(m.group("cam")) - 1, frame=frame)
