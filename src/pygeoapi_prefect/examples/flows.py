"""Example processes written as Prefect flows (`BasePrefectProcessor`).

- `word-stats`: a small flow of a few tasks;
- `tiles`: works through tiles as tasks, reports progress, and survives tiles that fail
  on their first attempt thanks to task retries.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.runtime import task_run

from pygeoapi_prefect.process.base import BasePrefectProcessor
from pygeoapi_prefect.progress import report_progress
from pygeoapi_prefect.schemas import (
    ExecuteRequest,
    InputDescription,
    OutputDescription,
    ProcessDescription,
)

__all__ = ["TilesProcessor", "WordStatsProcessor", "tiles_flow", "word_stats_flow"]


@task
def split_words(text: str) -> list[str]:
    """Split text into lower-case words."""
    return re.findall(r"[\w']+", text.lower())


@task
def count_words(words: list[str]) -> dict[str, int]:
    """Count each word."""
    return dict(Counter(words))


@task
def top_words(counts: dict[str, int], top: int) -> list[dict[str, Any]]:
    """The most frequent words, most frequent first."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [{"word": word, "count": count} for word, count in ranked]


@flow(name="word-stats")
def word_stats_flow(
    job_id: str | None,
    execute_request: ExecuteRequest,
    process_description: ProcessDescription,
) -> dict[str, Any]:
    """Count the words of a text and return the most frequent ones (one key per output)."""
    logger = get_run_logger()
    inputs = execute_request.inputs
    words = split_words(inputs["text"])
    counts = count_words(words)
    logger.info("job %s: %d words, %d distinct", job_id, len(words), len(counts))
    return {
        "words": len(words),
        "distinct": len(counts),
        "top": top_words(counts, int(inputs.get("top", 3))),
    }


class WordStatsProcessor(BasePrefectProcessor):
    """Word statistics of a text, computed by a Prefect flow of three tasks."""

    process_description = ProcessDescription(
        id="word-stats",
        version="1.0.0",
        title="Word statistics",
        description="Counts the words of a text with a Prefect flow of three tasks.",
        keywords=["text", "prefect"],
        inputs={
            "text": InputDescription(
                title="Text", description="The text.", schema_={"type": "string"}
            ),
            "top": InputDescription(
                title="Top",
                description="How many of the most frequent words to return.",
                schema_={"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
                min_occurs=0,
            ),
        },
        outputs={
            "words": OutputDescription(
                title="Words",
                description="How many words the text has.",
                schema_={"type": "integer", "contentMediaType": "application/json"},
            ),
            "distinct": OutputDescription(
                title="Distinct words",
                description="How many different words the text has.",
                schema_={"type": "integer", "contentMediaType": "application/json"},
            ),
            "top": OutputDescription(
                title="Most frequent words",
                description="The most frequent words with their counts, most frequent first.",
                schema_={
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "word": {"type": "string"},
                            "count": {"type": "integer"},
                        },
                    },
                    "contentMediaType": "application/json",
                },
            ),
        },
        example={"inputs": {"text": "the cat and the hat", "top": 2}},
    )
    process_flow = word_stats_flow


@task(retries=2, retry_delay_seconds=0.2)
def process_tile(index: int, fail_every: int, seconds: float) -> dict[str, Any]:
    """Work on one tile; every `fail_every`-th tile fails on its first attempt."""
    time.sleep(seconds)
    if fail_every and index % fail_every == 0 and task_run.run_count <= 1:
        raise RuntimeError(f"tile {index}: transient read error")
    return {"tile": index, "attempts": task_run.run_count}


@flow(name="tiles")
def tiles_flow(
    job_id: str | None,
    execute_request: ExecuteRequest,
    process_description: ProcessDescription,
) -> dict[str, Any]:
    """Process tiles one by one, retrying the ones that fail, reporting progress."""
    inputs = execute_request.inputs
    count = int(inputs.get("tiles", 5))
    fail_every = int(inputs.get("failEvery", 0))
    seconds = float(inputs.get("tileSeconds", 0.2))
    done = []
    for index in range(1, count + 1):
        done.append(process_tile(index, fail_every, seconds))
        report_progress(100 * index / count, f"tile {index} of {count} done")
    retried = [tile["tile"] for tile in done if tile["attempts"] > 1]
    return {"tiles": count, "retried": retried}


class TilesProcessor(BasePrefectProcessor):
    """Tile processing with progress and task retries."""

    process_description = ProcessDescription(
        id="tiles",
        version="1.0.0",
        title="Tiles",
        description="Processes tiles as Prefect tasks with retries, reporting progress.",
        keywords=["progress", "retries", "prefect"],
        inputs={
            "tiles": InputDescription(
                title="Tiles",
                description="How many tiles (1 to 100).",
                schema_={"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
                min_occurs=0,
            ),
            "failEvery": InputDescription(
                title="Fail every",
                description="Every n-th tile fails on its first attempt (0: none).",
                schema_={"type": "integer", "minimum": 0, "default": 0},
                min_occurs=0,
            ),
            "tileSeconds": InputDescription(
                title="Seconds per tile",
                description="How long one tile takes (0 to 60).",
                schema_={"type": "number", "minimum": 0, "maximum": 60, "default": 0.2},
                min_occurs=0,
            ),
        },
        outputs={
            "tiles": OutputDescription(
                title="Tiles",
                description="How many tiles were processed.",
                schema_={"type": "integer", "contentMediaType": "application/json"},
            ),
            "retried": OutputDescription(
                title="Retried tiles",
                description="The tiles that needed a retry.",
                schema_={
                    "type": "array",
                    "items": {"type": "integer"},
                    "contentMediaType": "application/json",
                },
            ),
        },
        example={"inputs": {"tiles": 6, "failEvery": 3, "tileSeconds": 0.5}},
    )
    process_flow = tiles_flow
