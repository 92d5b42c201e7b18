"""Base classes for processes written as Prefect flows."""

from pygeoapi_prefect.process.base import BasePrefectProcessor

__all__ = ["BasePrefectProcessor"]
