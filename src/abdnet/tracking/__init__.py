"""abdnet.tracking: from camera footage to identities.

MOTChallenge I/O (:mod:`.mot`), frame sources (:mod:`.video`, PyAV), the tracker protocol and
its adapter over Roboflow's ``trackers`` (:mod:`.tracker`), tracklets and their crops
(:mod:`.tracklets`), stitching and cross-camera linking on arrays (:mod:`.linking`), the
pipeline (:mod:`.pipeline`), outputs (:mod:`.outputs`), enrolment into the gallery
(:mod:`.enrol`), metrics (:mod:`.evaluate`), synthetic footage with ground truth
(:mod:`.footage`) and the linked / not linked comparison on it (:mod:`.compare`), person
detectors for footage without detections (:mod:`.detector`), annotated videos
(:mod:`.annotate`) and ABD-Net as BoxMOT's appearance model (:mod:`.boxmot_reid`).
``trackers``, ``av``, ``supervision``, torchvision's detection models, ``ultralytics`` and
``boxmot`` are imported only when used.
"""

from abdnet.tracking.annotate import identity_colour, write_annotated_video
from abdnet.tracking.boxmot_reid import BOXMOT_TRACKERS, AbdnetReID, BoxmotTracker
from abdnet.tracking.compare import LinkingComparison, compare_linking, comparison_table
from abdnet.tracking.detector import (
    DETECTORS,
    TORCHVISION_DETECTORS,
    Detector,
    TorchvisionDetector,
    YoloDetector,
    build_detector,
)
from abdnet.tracking.enrol import camera_numbers, default_label_prefix, enrol_identities
from abdnet.tracking.evaluate import (
    CameraScore,
    TrackingScore,
    evaluate_tracking,
    find_ground_truth,
)
from abdnet.tracking.linking import (
    attach_by_motion,
    cannot_links_by_proxy,
    group_embeddings,
    impostor_distances,
    impostor_quantile,
    impostor_threshold,
    link_cameras,
    overlaps,
    pairwise_distances,
    stitch,
)
from abdnet.tracking.mot import (
    ClipReport,
    MotRows,
    SequenceInfo,
    clip_rows,
    confidences_in_unit_range,
    read_mot,
    read_seqinfo,
    write_mot,
    write_seqinfo,
)
from abdnet.tracking.outputs import CONTACT_SHEET, IDENTITIES_FILE, write_results
from abdnet.tracking.pipeline import CameraInput, CameraTracks, Identities, identify, track_camera
from abdnet.tracking.tracker import (
    DEFAULT_TRACKER,
    TRACKERS,
    Detections,
    RoboflowTracker,
    Tracker,
    Tracks,
    build_tracker,
)
from abdnet.tracking.tracklets import (
    Crop,
    Tracklet,
    TrackletBuilder,
    choose_crops,
    crop_quality,
    pool_embeddings,
)
from abdnet.tracking.video import Frame, ImageSequence, VideoFile, open_source

__all__ = [
    "AbdnetReID",
    "BOXMOT_TRACKERS",
    "BoxmotTracker",
    "DETECTORS",
    "Detector",
    "TORCHVISION_DETECTORS",
    "TorchvisionDetector",
    "YoloDetector",
    "build_detector",
    "identity_colour",
    "write_annotated_video",
    "CONTACT_SHEET",
    "IDENTITIES_FILE",
    "DEFAULT_TRACKER",
    "TRACKERS",
    "CameraInput",
    "CameraScore",
    "CameraTracks",
    "ClipReport",
    "Crop",
    "Detections",
    "Frame",
    "Identities",
    "ImageSequence",
    "LinkingComparison",
    "MotRows",
    "RoboflowTracker",
    "SequenceInfo",
    "Tracker",
    "Tracklet",
    "TrackletBuilder",
    "TrackingScore",
    "Tracks",
    "VideoFile",
    "build_tracker",
    "camera_numbers",
    "default_label_prefix",
    "enrol_identities",
    "choose_crops",
    "clip_rows",
    "confidences_in_unit_range",
    "compare_linking",
    "comparison_table",
    "crop_quality",
    "evaluate_tracking",
    "find_ground_truth",
    "group_embeddings",
    "attach_by_motion",
    "cannot_links_by_proxy",
    "identify",
    "impostor_distances",
    "impostor_quantile",
    "impostor_threshold",
    "link_cameras",
    "open_source",
    "overlaps",
    "pairwise_distances",
    "pool_embeddings",
    "read_mot",
    "read_seqinfo",
    "stitch",
    "track_camera",
    "write_mot",
    "write_results",
    "write_seqinfo",
]
