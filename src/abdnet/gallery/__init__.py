"""abdnet.gallery: the persistent gallery (Milvus / Milvus Lite), its crop store, thresholds.

pymilvus is imported only when a gallery is opened.
"""

from abdnet.gallery.collection import (
    DEFAULT_COLLECTION,
    INDEX_TYPES,
    MAX_RESULTS,
    GalleryError,
    is_embedded,
)
from abdnet.gallery.enrol import (
    EmbeddedFiles,
    EnrolReport,
    NameMetadata,
    embed_files,
    enrol_files,
    enrol_sharded,
    name_metadata,
    pending_files,
)
from abdnet.gallery.gallery import Gallery, default_crop_folder
from abdnet.gallery.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    IMAGE_FORMATS,
    MIME_TYPES,
    CropImage,
    ImageTooLarge,
    ImageTooSmall,
    UnsupportedImageType,
    decode_crop,
    read_crop,
    sha256_hex,
)
from abdnet.gallery.model import ModelInfo, ModelMismatchError, describe_extractor
from abdnet.gallery.records import (
    FIRST_CAMERA,
    LABEL_MAX,
    Added,
    Enrolment,
    GalleryEntry,
    Hit,
    Page,
    SearchFilter,
    format_time,
    parse_time,
)
from abdnet.gallery.store import (
    CropIntegrityError,
    CropStore,
    StoreStats,
    UrlCropStore,
    open_crop_store,
)
from abdnet.gallery.threshold import Threshold, load_threshold, save_threshold

__all__ = [
    "DEFAULT_COLLECTION",
    "INDEX_TYPES",
    "MAX_RESULTS",
    "FIRST_CAMERA",
    "LABEL_MAX",
    "Added",
    "Enrolment",
    "Gallery",
    "GalleryEntry",
    "GalleryError",
    "Hit",
    "Page",
    "SearchFilter",
    "default_crop_folder",
    "format_time",
    "is_embedded",
    "parse_time",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIDE",
    "IMAGE_FORMATS",
    "MIME_TYPES",
    "CropImage",
    "ImageTooLarge",
    "ImageTooSmall",
    "UnsupportedImageType",
    "decode_crop",
    "read_crop",
    "sha256_hex",
    "ModelInfo",
    "ModelMismatchError",
    "describe_extractor",
    "CropIntegrityError",
    "CropStore",
    "StoreStats",
    "UrlCropStore",
    "open_crop_store",
    "EmbeddedFiles",
    "EnrolReport",
    "NameMetadata",
    "embed_files",
    "enrol_files",
    "enrol_sharded",
    "name_metadata",
    "pending_files",
    "Threshold",
    "load_threshold",
    "save_threshold",
]
