"""abdnet.retrieval: feature extraction, feature files and the nearest-neighbour index.

faiss is imported only when an index is built or opened.
"""

from abdnet.data import (
    IMAGE_EXTENSIONS,
    ImageInput,
    ImageReadError,
    NameLabels,
    parse_name,
    read_image,
)
from abdnet.retrieval.extractor import Extraction, FeatureExtractor
from abdnet.retrieval.features import FeatureSet, load_features, save_features
from abdnet.retrieval.files import collect_images, parse_labels
from abdnet.retrieval.index import (
    INDEX_KINDS,
    INDEX_LOCK_TIMEOUT,
    MAX_K,
    FeatureIndex,
    IndexChangedError,
    SearchResult,
    build_index,
    default_ivfpq_params,
    open_index,
    space_of_extraction,
    update_index,
)
from abdnet.retrieval.sharded import (
    FeatureFileResult,
    ShardFailedError,
    extract_feature_file,
    part_path,
)

__all__ = [
    "FeatureExtractor",
    "Extraction",
    "ImageInput",
    "ImageReadError",
    "read_image",
    "FeatureSet",
    "load_features",
    "save_features",
    "IMAGE_EXTENSIONS",
    "collect_images",
    "parse_labels",
    "FeatureFileResult",
    "ShardFailedError",
    "extract_feature_file",
    "part_path",
    "NameLabels",
    "parse_name",
    "INDEX_KINDS",
    "INDEX_LOCK_TIMEOUT",
    "MAX_K",
    "FeatureIndex",
    "IndexChangedError",
    "SearchResult",
    "build_index",
    "default_ivfpq_params",
    "open_index",
    "space_of_extraction",
    "update_index",
]
