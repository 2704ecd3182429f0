"""Fixtures that run ALPS for real: certificates, a worker and an API on loopback.

``alps_server`` is one worker and one API shared by the whole test session; tests
that restart or stop a service use ``make_server`` for servers of their own. Both
start the installed console scripts and stop them even when a test fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from alps import certs

from helpers import USERS, AlpsServer, Pki, running_server


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = certs.make_ca("ALPS test CA")
    certs.write_cert(folder / "ca.crt", ca.cert)
    certs.write_key(folder / "ca.key", ca.key)
    certs.issue_server(ca, ["127.0.0.1", "localhost"]).write(
        folder / "server.crt", folder / "server.key"
    )
    bundle = Pki(folder, ca)
    for name, (email, _) in USERS.items():
        bundle.issue(name, email)
    bundle.issue("stranger", "stranger@example.com")
    return bundle


@pytest.fixture(scope="session")
def alps_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[AlpsServer]:
    with running_server(tmp_path_factory.mktemp("alps"), pki) as server:
        yield server


@pytest.fixture
def make_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[Callable[..., AlpsServer]]:
    """Start servers of a test's own, with worker settings; all stop at the end."""
    with contextlib.ExitStack() as stack:

        def make(
            extra_users: dict[str, str] | None = None,
            api_settings: dict[str, Any] | None = None,
            run_as: dict[str, str] | None = None,
            **worker_settings: Any,
        ) -> AlpsServer:
            folder = tmp_path_factory.mktemp("alps")
            server = running_server(
                folder, pki, extra_users, api_settings, run_as, **worker_settings
            )
            return stack.enter_context(server)

        yield make
