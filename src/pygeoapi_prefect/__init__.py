"""Prefect as the job engine behind pygeoapi's OGC API - Processes."""

from pygeoapi_prefect.manager import PrefectManager
from pygeoapi_prefect.progress import report_progress
from pygeoapi_prefect.settings import ManagerSettings, ProcessSettings

__all__ = ["ManagerSettings", "PrefectManager", "ProcessSettings", "report_progress"]
