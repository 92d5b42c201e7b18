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


_BBOX_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["bbox"],
    "properties": {
        "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 6},
        "crs": {"type": "string", "format": "uri"},
    },
}

KINDS_METADATA: dict[str, Any] = {
    "version": "1.0.0",
    "id": "kinds",
    "title": "Input and output kinds",
    "description": "Takes each kind of OGC input and returns what it was given, by output.",
    "jobControlOptions": ["sync-execute", "async-execute"],
    "keywords": [],
    "links": [],
    "inputs": {
        "text": {
            "title": "Text",
            "description": "A string.",
            "schema": {"type": "string"},
            "minOccurs": 0,
        },
        "numbers": {
            "title": "Numbers",
            "description": "Up to 5 integers.",
            "schema": {"type": "integer"},
            "minOccurs": 0,
            "maxOccurs": 5,
        },
        "area": {
            "title": "Area",
            "description": "A bounding box.",
            "schema": {**_BBOX_SCHEMA, "format": "ogc-bbox"},
            "minOccurs": 0,
        },
        "image": {
            "title": "Image",
            "description": "A PNG or TIFF image, inline (base64) or by reference.",
            "schema": {
                "oneOf": [
                    {"type": "string", "contentEncoding": "base64", "contentMediaType": media}
                    for media in ("image/png", "image/tiff")
                ]
            },
            "minOccurs": 0,
        },
        "shape": {
            "title": "Shape",
            "description": "A point or a named place.",
            "schema": {
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["type", "coordinates"],
                        "properties": {
                            "type": {"const": "Point"},
                            "coordinates": {"type": "array", "items": {"type": "number"}},
                        },
                    },
                    {"type": "string", "enum": ["home", "work"]},
                ]
            },
            "minOccurs": 0,
        },
    },
    "outputs": {
        "textOutput": {
            "title": "Text output",
            "description": "The text input.",
            "schema": {"type": "string"},
        },
        "numbersOutput": {
            "title": "Numbers output",
            "description": "The numbers input, as an array.",
            "schema": {"type": "array", "items": {"type": "integer"}},
        },
        "areaOutput": {
            "title": "Area output",
            "description": "The area input.",
            "schema": _BBOX_SCHEMA,
        },
    },
}


class KindsProcessor(BaseProcessor):  # type: ignore[misc]
    """Returns each requested output (all by default) from the matching input."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, KINDS_METADATA)
        self.supports_outputs = True

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        numbers = data.get("numbers", [])
        values = {
            "textOutput": data.get("text", ""),
            "numbersOutput": numbers if isinstance(numbers, list) else [numbers],
            "areaOutput": data.get("area", {"bbox": [0, 0, 0, 0]}),
        }
        wanted = list(outputs) if outputs else list(values)
        return "application/json", {name: values[name] for name in wanted}
