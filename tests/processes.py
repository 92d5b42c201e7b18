"""Processes used only by the tests."""

from __future__ import annotations

from typing import Any

from pygeoapi.process.base import BaseProcessor

BINARY_METADATA: dict[str, Any] = {
    "version": "1.0.0",
    "id": "binary",
    "title": "Binary",
    "description": "Returns bytes that are not text.",
    "jobControlOptions": ["sync-execute", "async-execute"],
    "keywords": [],
    "links": [],
    "inputs": {
        "size": {
            "title": "Size",
            "description": "Number of bytes.",
            "schema": {"type": "integer"},
            "minOccurs": 0,
            "maxOccurs": 1,
        }
    },
    "outputs": {
        "data": {
            "title": "Data",
            "description": "Bytes 0..255 repeated.",
            "schema": {"type": "string", "contentMediaType": "application/octet-stream"},
        }
    },
}

PAYLOAD = bytes(range(256))


class BinaryProcessor(BaseProcessor):  # type: ignore[misc]
    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, BINARY_METADATA)

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        size = int(data.get("size", 256))
        return "application/octet-stream", (PAYLOAD * (size // 256 + 1))[:size]
