"""The package version, a leaf that every stage may import; pyproject.toml reads it from here."""

__version__ = "0.3.0"
