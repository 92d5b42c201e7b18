from pathlib import Path

import pytest
from pydantic import ValidationError

from pygeoapi_prefect import ManagerSettings, PrefectManager, ProcessSettings


def test_connection_string_is_the_api_url() -> None:
    settings = ManagerSettings.from_manager_def(
        {"name": "x", "connection": "http://prefect:4200/api", "output_dir": "/data/out"}
    )
    assert settings.api_url == "http://prefect:4200/api"
    assert settings.output_dir == Path("/data/out")


def test_prefect_block_and_defaults() -> None:
    settings = ManagerSettings.from_manager_def(
        {"name": "x", "connection": None, "prefect": {"sync_timeout": 5, "tags": ["a"]}}
    )
    assert settings.api_url is None
    assert settings.sync_timeout == 5
    assert settings.tags == ["a"]
    assert settings.result_storage is None


def test_unknown_options_are_refused() -> None:
    with pytest.raises(ValidationError):
        ManagerSettings.from_manager_def({"name": "x", "prefect": {"sync_timeot": 5}})
    with pytest.raises(ValidationError):
        ProcessSettings.model_validate({"retires": 2})


def test_construction_contacts_nothing() -> None:
    manager = PrefectManager(
        {"name": "x", "connection": "http://127.0.0.1:9/api", "output_dir": None, "processes": {}}
    )
    assert manager.is_async
    assert manager.connection._client is None
