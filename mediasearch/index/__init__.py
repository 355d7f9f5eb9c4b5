"""Vector + metadata index: the interface and its LanceDB / OpenSearch implementations."""

from mediasearch.index.base import Hit, IndexError_, IndexFilter, IndexSpec, VectorField, VectorIndex

__all__ = ["Hit", "IndexError_", "IndexFilter", "IndexSpec", "VectorField", "VectorIndex"]
