"""abdnet.evaluation"""

__all__: list[str] = []
