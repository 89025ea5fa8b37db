"""abdnet.engine"""

__all__: list[str] = []
