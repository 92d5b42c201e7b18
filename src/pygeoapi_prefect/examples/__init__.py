"""Example processes used by `example-config.yml`, the tests and the benchmarks."""

from pygeoapi_prefect.examples.echo import EchoProcessor
from pygeoapi_prefect.examples.fail import FailProcessor
from pygeoapi_prefect.examples.flows import TilesProcessor, WordStatsProcessor
from pygeoapi_prefect.examples.progress import ProgressProcessor

__all__ = [
    "EchoProcessor",
    "FailProcessor",
    "ProgressProcessor",
    "TilesProcessor",
    "WordStatsProcessor",
]
