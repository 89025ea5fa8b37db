"""Identity labels with a meaning of their own in the Market-1501 protocol.

pid -1 marks "junk" images (Market-1501 and DukeMTMC-reID label them so: bad detections,
body parts): never a match nor a distractor, they are left out of every gallery that is
ranked, and the parsers drop them when a data set is read.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

__all__ = ["JUNK_PID", "is_junk"]

JUNK_PID = -1

_P = TypeVar("_P", int, np.ndarray)


def is_junk(pid: _P) -> bool | np.ndarray:
    """True for a junk label (``JUNK_PID``, and any other negative pid); element-wise on an
    array of pids."""
    return pid < 0
