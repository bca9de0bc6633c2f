import os
import shutil
import sys
import tempfile

import pytest

from engine_helpers import demo_subset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Tests keep their own state: every cache (demo digits, compiled kernels, a Lite venv) goes to a
# folder of this session, never ~/.cache/ppmobilenet, and subprocesses inherit it. Paddle Lite is
# found only through PPMOBILENET_LITE_PYTHON, which tools/test.sh sets to the interpreter that
# tools/provision_lite.py provisioned.
SESSION_CACHE = tempfile.mkdtemp(prefix="ppmobilenet-test-cache-")
os.environ["PPMOBILENET_CACHE"] = SESSION_CACHE
os.environ["PPMOBILENET_LITE_VENV"] = os.path.join(SESSION_CACHE, "lite-venv")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; CI runs them, `-m 'not slow'` skips them")


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture(scope="module")
def data(request, tmp_path_factory):
    """A small demo-digits data set for a module's training runs (engine_helpers.demo_subset), cut
    once per module; a module sets DATA_SUBSET (demo_subset's keyword arguments) for another cut."""
    cache = tmp_path_factory.getbasetemp() / "engine-cache"
    folder = tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_") + "-data")
    return demo_subset(folder, str(cache), **getattr(request.module, "DATA_SUBSET", {}))


# In CI nothing the project promises may skip: a skip there is a broken feature, so it fails.
_skipped = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)
    if os.environ.get("CI") == "true" and _skipped:
        print(f"\nCI=true: {len(_skipped)} test(s) skipped, which CI treats as failures:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = 1
