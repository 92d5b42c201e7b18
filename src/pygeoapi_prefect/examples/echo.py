"""`echo`: returns its input, optionally after a pause (the OGC test suite's echo process)."""

from __future__ import annotations

import time
from typing import Any

from pygeoapi.process.base import BaseProcessor, ProcessorExecuteError

__all__ = ["PROCESS_METADATA", "EchoProcessor"]

PROCESS_METADATA: dict[str, Any] = {
    "version": "1.0.0",
    "id": "echo",
    "title": {"en": "Echo"},
    "description": {"en": "Returns the string it is given, after an optional pause."},
    "jobControlOptions": ["sync-execute", "async-execute"],
    "keywords": ["echo", "test"],
    "links": [],
    "inputs": {
        "echoInput": {
            "title": "Echo input",
            "description": "The string to return.",
            "schema": {"type": "string"},
            "minOccurs": 1,
            "maxOccurs": 1,
        },
        "pause": {
            "title": "Pause",
            "description": "Seconds to wait before answering.",
            "schema": {"type": "number", "minimum": 0, "maximum": 3600},
            "minOccurs": 0,
            "maxOccurs": 1,
        },
    },
    "outputs": {
        "echoOutput": {
            "title": "Echo output",
            "description": "The string that was given.",
            "schema": {"type": "string", "contentMediaType": "application/json"},
        }
    },
    "example": {"inputs": {"echoInput": "teststring"}},
}


class EchoProcessor(BaseProcessor):  # type: ignore[misc]
    """Echo the `echoInput` string back as `echoOutput`."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, PROCESS_METADATA)

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        """Return `{"id": "echoOutput", "value": <echoInput>}` after `pause` seconds."""
        value = data.get("echoInput")
        if not isinstance(value, str):
            raise ProcessorExecuteError("echoInput must be a string")
        pause = data.get("pause", 0)
        if not isinstance(pause, int | float) or not 0 <= pause <= 3600:
            raise ProcessorExecuteError("pause must be a number of seconds from 0 to 3600")
        time.sleep(pause)
        return "application/json", {"id": "echoOutput", "value": value}
