# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the fault suite: the integration fixtures (broker, platform,
notify_socket, krtiotd, krtiotd_binary) reused as they are, plus www/nginx.

tests/integration/conftest.py is loaded by path under another module name:
importing it as "conftest" would find this very file.
"""

import importlib.util
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
INTEGRATION = os.path.join(os.path.dirname(HERE), "integration")
if INTEGRATION not in sys.path:
    sys.path.insert(0, INTEGRATION)


def _load_integration_conftest():
    name = "krtiot_integration_conftest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(INTEGRATION, "conftest.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_integration = _load_integration_conftest()
pytest_runtest_makereport = _integration.pytest_runtest_makereport
broker = _integration.broker
platform = _integration.platform
notify_socket = _integration.notify_socket
krtiotd_binary = _integration.krtiotd_binary
krtiotd = _integration.krtiotd

from nginx import NGINX  # noqa: E402  (tests/integration, on sys.path above)


@pytest.fixture
def www(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    return d


@pytest.fixture
def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (mount, bind mounts)")


@pytest.fixture
def need_nginx():
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx is not installed (%s)" % NGINX)
