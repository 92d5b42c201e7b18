import pygeoapi_prefect


def test_public_api_is_exactly_the_documented_names() -> None:
    assert sorted(pygeoapi_prefect.__all__) == [
        "ManagerSettings",
        "PrefectManager",
        "ProcessSettings",
        "report_progress",
    ]
    for name in pygeoapi_prefect.__all__:
        assert getattr(pygeoapi_prefect, name) is not None
