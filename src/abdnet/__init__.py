"""abdnet: ABD-Net (Attentive but Diverse Person Re-Identification, ICCV 2019).

Sub-packages, imports pointing down: cli -> viz -> export -> retrieval -> ablation ->
engine -> models -> losses -> data -> evaluation -> config.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    # the one source of the version is pyproject.toml, read back from the installed metadata
    __version__ = version("abdnet")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
del PackageNotFoundError, version
__all__ = ["__version__"]
