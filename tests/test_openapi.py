"""The committed example-openapi.yml is what pygeoapi generates from example-config.yml."""

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PYGEOAPI = str(Path(sys.executable).parent / "pygeoapi")


def test_example_openapi_is_in_sync(tmp_path: Path) -> None:
    generated = tmp_path / "openapi.yml"
    subprocess.run(
        [
            PYGEOAPI,
            "openapi",
            "generate",
            str(ROOT / "example-config.yml"),
            "--output-file",
            str(generated),
        ],
        check=True,
        capture_output=True,
        env={"PREFECT_API_URL": "http://127.0.0.1:9/api", "PATH": ""},
    )
    assert yaml.safe_load(generated.read_text()) == yaml.safe_load(
        (ROOT / "example-openapi.yml").read_text()
    ), "example-openapi.yml is stale: run `make openapi`"
