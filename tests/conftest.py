import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; CI runs them, `-m 'not slow'` skips them")


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


# In CI nothing the project promises may skip: a skip there is a broken feature, so it fails.
_skipped = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI") == "true" and _skipped:
        print(f"\nCI=true: {len(_skipped)} test(s) skipped, which CI treats as failures:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = 1
