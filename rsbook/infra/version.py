"""The package version (read by setuptools and recorded in every provenance)."""

__version__ = "0.2.0"
