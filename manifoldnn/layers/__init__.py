"""Neural-network layers acting on manifold-valued data."""

__all__: list[str] = []
