"""abdnet.viz"""

__all__: list[str] = []
