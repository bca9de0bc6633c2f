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
