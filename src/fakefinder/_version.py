"""The package version, a leaf that every stage may import."""

__version__ = "0.2.0"
