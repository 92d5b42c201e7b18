"""`fail`: a process that fails on demand, to see how failed jobs look."""

from __future__ import annotations

from typing import Any

from pygeoapi.process.base import BaseProcessor, ProcessorExecuteError

__all__ = ["PROCESS_METADATA", "FailProcessor"]

PROCESS_METADATA: dict[str, Any] = {
    "version": "1.0.0",
    "id": "fail",
    "title": {"en": "Fail on demand"},
    "description": {"en": "Fails with the given message, or succeeds when `fail` is false."},
    "jobControlOptions": ["sync-execute", "async-execute"],
    "keywords": ["test"],
    "links": [],
    "inputs": {
        "message": {
            "title": "Message",
            "description": "The failure message.",
            "schema": {"type": "string"},
            "minOccurs": 0,
            "maxOccurs": 1,
        },
        "fail": {
            "title": "Fail",
            "description": "Whether to fail (default true).",
            "schema": {"type": "boolean", "default": True},
            "minOccurs": 0,
            "maxOccurs": 1,
        },
    },
    "outputs": {
        "result": {
            "title": "Result",
            "description": "`ok` when the process did not fail.",
            "schema": {"type": "string", "contentMediaType": "application/json"},
        }
    },
    "example": {"inputs": {"message": "boom"}},
}


class FailProcessor(BaseProcessor):  # type: ignore[misc]
    """Raise `ProcessorExecuteError(message)` unless `fail` is false."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, PROCESS_METADATA)

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        """Fail with `message`, or return `{"result": "ok"}`."""
        if data.get("fail", True):
            raise ProcessorExecuteError(str(data.get("message", "failed on demand")))
        return "application/json", {"id": "result", "value": "ok"}
