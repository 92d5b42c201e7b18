"""`progress`: works through a number of steps and reports progress after each."""

from __future__ import annotations

import time
from typing import Any

from pygeoapi.process.base import BaseProcessor, ProcessorExecuteError

from pygeoapi_prefect.progress import report_progress

__all__ = ["PROCESS_METADATA", "ProgressProcessor"]

PROCESS_METADATA: dict[str, Any] = {
    "version": "1.0.0",
    "id": "progress",
    "title": {"en": "Progress"},
    "description": {"en": "Sleeps through `steps` steps and reports progress after each."},
    "jobControlOptions": ["sync-execute", "async-execute"],
    "keywords": ["progress", "test"],
    "links": [],
    "inputs": {
        "steps": {
            "title": "Steps",
            "description": "How many steps (1 to 100).",
            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
            "minOccurs": 0,
            "maxOccurs": 1,
        },
        "stepSeconds": {
            "title": "Seconds per step",
            "description": "How long each step takes (0 to 60).",
            "schema": {"type": "number", "minimum": 0, "maximum": 60, "default": 1},
            "minOccurs": 0,
            "maxOccurs": 1,
        },
    },
    "outputs": {
        "steps": {
            "title": "Steps done",
            "description": "The number of steps completed.",
            "schema": {"type": "integer", "contentMediaType": "application/json"},
        }
    },
    "example": {"inputs": {"steps": 5, "stepSeconds": 1}},
}


class ProgressProcessor(BaseProcessor):  # type: ignore[misc]
    """Report progress with `report_progress` while working through steps."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, PROCESS_METADATA)

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        """Sleep `stepSeconds` per step, reporting progress after each of `steps` steps."""
        steps = data.get("steps", 5)
        seconds = data.get("stepSeconds", 1)
        if not isinstance(steps, int) or not 1 <= steps <= 100:
            raise ProcessorExecuteError("steps must be an integer from 1 to 100")
        if not isinstance(seconds, int | float) or not 0 <= seconds <= 60:
            raise ProcessorExecuteError("stepSeconds must be a number from 0 to 60")
        for step in range(1, steps + 1):
            time.sleep(seconds)
            report_progress(100 * step / steps, f"step {step} of {steps} done")
        return "application/json", {"id": "steps", "value": steps}
