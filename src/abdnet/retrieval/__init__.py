"""abdnet.retrieval"""

__all__: list[str] = []
