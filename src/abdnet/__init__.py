"""abdnet: ABD-Net (Attentive but Diverse Person Re-Identification, ICCV 2019).

Sub-packages, imports pointing down: cli -> viz -> export -> retrieval -> ablation ->
engine -> models -> losses -> data -> evaluation -> config.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
