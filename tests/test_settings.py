import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pygeoapi_prefect import ManagerSettings, PrefectManager
from pygeoapi_prefect.settings import ConfigError, process_settings_of


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


def test_unknown_options_are_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as manager_error:
        ManagerSettings.from_manager_def({"name": "x", "prefect": {"sync_timeot": 5}})
    assert str(manager_error.value).startswith(
        "server.manager.prefect.sync_timeot: unknown key; accepted keys: api_url, "
    )
    assert "sync_timeout" in str(manager_error.value)
    with pytest.raises(ConfigError) as process_error:
        process_settings_of("echo", {"processor": {"name": "x", "prefect": {"retires": 2}}})
    assert str(process_error.value).startswith(
        "resources.echo.processor.prefect.retires: unknown key; accepted keys: deployment, "
    )
    assert "retries" in str(process_error.value)


def test_a_bad_value_is_named_with_what_was_given() -> None:
    with pytest.raises(ConfigError, match=r"^resources.p.processor.prefect.timeout: .*'soon'"):
        process_settings_of("p", {"processor": {"prefect": {"timeout": "soon"}}})


def test_connection_forms(tmp_path: Path) -> None:
    def read(connection: Any) -> ManagerSettings:
        return ManagerSettings.from_manager_def({"name": "x", "connection": connection})

    assert read(None).api_url is None and read(None).database is None
    assert read("https://prefect.example/api").api_url == "https://prefect.example/api"
    # pygeoapi's TinyDB convention: a file path, here the embedded default's database
    assert read(str(tmp_path / "jobs.db")).database == tmp_path / "jobs.db"
    existing = tmp_path / "prefect.db"
    sqlite3.connect(existing).execute("create table t (x)").connection.close()
    assert read(str(existing)).database == existing
    assert read({"api_url": "http://127.0.0.1:4200/api"}).api_url == "http://127.0.0.1:4200/api"


@pytest.mark.parametrize(
    ("connection", "reason"),
    [
        (42, "42 is not accepted"),
        ({"host": "db", "port": 5432}, "unknown keys host, port"),
        ("ftp://prefect.example/api", "'ftp://prefect.example/api' is not accepted"),
        ("/no/such/directory/jobs.db", "its directory '/no/such/directory' does not exist"),
        ("/proc/jobs.db", "it is not writable"),
        ("{tmp}", "it is a directory"),
        ("{tmp}/tinydb.json", "is not an SQLite database"),
    ],
)
def test_other_connections_are_refused_with_the_accepted_forms(
    tmp_path: Path, connection: Any, reason: str
) -> None:
    (tmp_path / "tinydb.json").write_text('{"_default": {}}')
    if isinstance(connection, str):
        connection = connection.format(tmp=tmp_path)
    with pytest.raises(ConfigError) as refused:
        ManagerSettings.from_manager_def({"name": "x", "connection": connection})
    message = str(refused.value)
    assert message.startswith("server.manager.connection: ")
    assert reason in message
    assert "null (PREFECT_API_URL, else the embedded default), a Prefect API URL" in message


def test_the_manager_refuses_a_bad_process_setting() -> None:
    processes = {"echo": {"type": "process", "processor": {"name": "x", "prefect": {"tgas": []}}}}
    with pytest.raises(ConfigError, match=r"^resources.echo.processor.prefect.tgas: unknown"):
        PrefectManager(
            {"name": "x", "connection": None, "output_dir": None, "processes": processes}
        )


def test_construction_contacts_nothing() -> None:
    manager = PrefectManager(
        {"name": "x", "connection": "http://127.0.0.1:9/api", "output_dir": None, "processes": {}}
    )
    assert manager.is_async
    assert manager.connection._client is None
