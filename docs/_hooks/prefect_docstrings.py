"""MkDocs hook: drop griffe warnings about docstrings that Prefect parses at import time.

`mkdocs-click` imports `pygeoapi_prefect.cli` to document it, which defines Prefect flows.
Prefect parses each flow's docstring with griffe, outside any module
(`<module>:LINE: No type or annotation for parameter ...`), and mkdocstrings routes
griffe's warnings into MkDocs, where `--strict` would count them. Those warnings are
about Prefect's parameter schema, not about these docs; warnings about documented
objects (which name a real module) still count.
"""

from __future__ import annotations

import logging
from typing import Any


class _PrefectDocstringFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "<module>:" not in record.getMessage()


def on_config(config: Any) -> Any:
    """Install the filter on the logger mkdocstrings gives griffe."""
    logging.getLogger("mkdocs.plugins.griffe").addFilter(_PrefectDocstringFilter())
    return config
