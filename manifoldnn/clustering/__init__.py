"""Scikit-learn-style clustering estimators and clustering metrics."""

__all__: list[str] = []
