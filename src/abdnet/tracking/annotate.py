"""The annotated video of one camera: its footage with every tracked box and the box's global
identity id drawn, one colour per identity, encoded with PyAV.

The footage is decoded a second time (identities are known only once every camera is
tracked and linked), so nothing holds the whole video. The encoder is H.264 (libx264) where
the installed PyAV has it, else MPEG-4 Part 2; both need an even frame size, so an odd
width or height is padded by one black pixel. The file is written atomically.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from abdnet.files import atomic_file
from abdnet.tracking.mot import MotRows
from abdnet.tracking.pipeline import CameraTracks, Identities, result_rows
from abdnet.tracking.video import open_source

__all__ = ["identity_colour", "draw_boxes", "video_codec", "write_annotated_video"]

_CODECS = ("libx264", "mpeg4")


def identity_colour(identity: int) -> tuple[int, int, int]:
    """A bright RGB colour for ``identity``; neighbouring ids get distant hues (golden ratio)."""
    hue = (identity * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def draw_boxes(image: np.ndarray, ids: np.ndarray, boxes_xywh: np.ndarray) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 with each box outlined and labelled ``#id``."""
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    for pid, (x, y, w, h) in zip(ids.tolist(), boxes_xywh.tolist()):
        colour = identity_colour(int(pid))
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=2)
        label = f"#{pid}"
        tx, ty = x + 2, max(0.0, y - 11)
        left, top, right, bottom = draw.textbbox((tx, ty), label)
        draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=colour)
        draw.text((tx, ty), label, fill=(0, 0, 0))
    return np.asarray(im)


def video_codec() -> str:
    """The first encoder of libx264 / mpeg4 the installed PyAV (its FFmpeg) has."""
    import av

    for name in _CODECS:
        try:
            av.Codec(name, "w")
        except (av.error.FFmpegError, ValueError):
            continue
        return name
    raise RuntimeError(f"PyAV {av.__version__} has none of the video encoders {_CODECS}")


def write_annotated_video(
    path: str | Path,
    cam: CameraTracks,
    identities: Identities,
    *,
    codec: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``cam``'s footage with its result boxes and identity ids to ``path`` (an
    ``.mp4``), atomically. ``progress`` is called with 1 after each frame."""
    import av

    rows: MotRows = result_rows(cam, identities)
    per_frame = rows.by_frame()
    source = open_source(cam.camera.path)
    width, height = source.info.width, source.info.height
    even_w, even_h = width + width % 2, height + height % 2
    codec = codec or video_codec()
    rate = Fraction(cam.frame_rate).limit_denominator(1001)
    path = Path(path)
    with atomic_file(path) as tmp:
        with av.open(str(tmp), "w") as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = even_w, even_h, "yuv420p"
            if codec == "libx264":
                stream.options = {"preset": "veryfast", "crf": "20"}
            else:
                stream.bit_rate = max(1_000_000, even_w * even_h * 8)
            canvas = np.zeros((even_h, even_w, 3), dtype=np.uint8)
            for frame in source:
                idx = per_frame.get(frame.index)
                image = frame.image
                if idx is not None:
                    image = draw_boxes(image, rows.ids[idx], rows.boxes[idx])
                canvas[:height, :width] = image
                vf = av.VideoFrame.from_ndarray(canvas, format="rgb24")
                for packet in stream.encode(vf):
                    container.mux(packet)
                if progress is not None:
                    progress(1)
            for packet in stream.encode():
                container.mux(packet)
    return path
