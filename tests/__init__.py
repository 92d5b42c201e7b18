"""The test suite. Imported before any test module, and so before Prefect is.

The tests never touch the user's own Prefect home (`~/.prefect`): each test session (each
pytest-xdist worker) gets one of its own, removed at exit. Without it, an embedded default
that a test starts without a `PREFECT_HOME` of its own would leave a database there at
this Prefect's migration, which a run at another Prefect release (`make versions`) cannot
open. (The servers the tests start import `tests.processes`, and so this package: they
keep the `PREFECT_HOME` their test gives them.)
"""

import atexit
import os
import shutil
import sys
import tempfile

if "pytest" in sys.modules:
    _HOME = tempfile.mkdtemp(prefix="pygeoapi-prefect-tests-home-")
    atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
    os.environ["PREFECT_HOME"] = _HOME
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
