"""abdnet.retrieval: feature extraction, feature files and the nearest-neighbour index.

faiss is imported only when an index is built or opened.
"""

from abdnet.retrieval.extractor import (
    Extraction,
    FeatureExtractor,
    ImageInput,
    ImageReadError,
    read_image,
    resolve_device,
)
from abdnet.retrieval.features import FeatureSet, load_features, save_features
from abdnet.retrieval.files import (
    IMAGE_EXTENSIONS,
    NameLabels,
    collect_images,
    parse_labels,
    parse_name,
)
from abdnet.retrieval.index import (
    INDEX_KINDS,
    FeatureIndex,
    SearchResult,
    build_index,
    default_ivfpq_params,
    open_index,
)

__all__ = [
    "FeatureExtractor",
    "Extraction",
    "ImageInput",
    "ImageReadError",
    "read_image",
    "resolve_device",
    "FeatureSet",
    "load_features",
    "save_features",
    "IMAGE_EXTENSIONS",
    "collect_images",
    "parse_labels",
    "NameLabels",
    "parse_name",
    "INDEX_KINDS",
    "FeatureIndex",
    "SearchResult",
    "build_index",
    "default_ivfpq_params",
    "open_index",
]
