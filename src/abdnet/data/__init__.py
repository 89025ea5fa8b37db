"""abdnet.data: data sets (parsers, synthetic), transforms, P x K sampler and loaders."""

from .dataset import DatasetError, ImageRecord, ReIDDataset, make_dataset, relabel, split_validation
from .images import (
    IMAGE_EXTENSIONS,
    MAX_UPSCALE,
    ImageCheck,
    ImageInput,
    ImageReadError,
    check_image_file,
    read_image,
    upscale_warning,
)
from .loader import (
    ImageDataset,
    build_test_loader,
    build_train_loader,
    caching_reader,
    resolve_workers,
)
from .names import NameLabels, parse_name
from .parsers import (
    DATASET_NAMES,
    build_dataset,
    detect_layout,
    open_dataset,
    parse_csv,
    parse_dukemtmc,
    parse_folder,
    parse_market1501,
    parse_msmt17,
)
from .person import Appearance, PersonBox, PersonLayer, make_appearance, render_person
from .sampler import RandomIdentitySampler
from .synthetic import SYNTHETIC_MARKER, SyntheticReID, write_synthetic
from .transforms import (
    RandomChannelGain,
    RandomErasing,
    RandomTranslate,
    build_test_transform,
    build_train_transform,
)

__all__ = [
    "Appearance",
    "PersonBox",
    "PersonLayer",
    "make_appearance",
    "render_person",
    "IMAGE_EXTENSIONS",
    "MAX_UPSCALE",
    "ImageCheck",
    "ImageInput",
    "ImageReadError",
    "check_image_file",
    "NameLabels",
    "parse_name",
    "read_image",
    "upscale_warning",
    "DATASET_NAMES",
    "SYNTHETIC_MARKER",
    "DatasetError",
    "ImageDataset",
    "ImageRecord",
    "RandomChannelGain",
    "RandomErasing",
    "RandomIdentitySampler",
    "RandomTranslate",
    "ReIDDataset",
    "SyntheticReID",
    "build_dataset",
    "build_test_loader",
    "build_test_transform",
    "build_train_loader",
    "build_train_transform",
    "caching_reader",
    "detect_layout",
    "make_dataset",
    "open_dataset",
    "parse_csv",
    "parse_dukemtmc",
    "parse_folder",
    "parse_market1501",
    "parse_msmt17",
    "relabel",
    "resolve_workers",
    "split_validation",
    "write_synthetic",
]
