"""Jobs that run as other accounts: their IDs, their home, and what they can read."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from helpers import console_script, wait_stopped

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="run_as needs root")


@pytest.fixture
def accounts() -> Iterator[list[str]]:
    """Two system accounts made for the test and removed after it."""
    names = [f"alpst{secrets.token_hex(3)}" for _ in range(2)]
    made = []
    try:
        for name in names:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", name],
                check=True,
                capture_output=True,
            )
            made.append(name)
        yield names
    finally:
        for name in made:
            subprocess.run(["userdel", name], check=False, capture_output=True)


def run(client, command: str) -> tuple[dict, bytes, bytes]:
    job_id = client.post("/start", json={"job": command}).json()["jobID"]
    body = wait_stopped(client, job_id)
    stdout = client.get(f"/output/{job_id}/stdout").content
    stderr = client.get(f"/output/{job_id}/stderr").content
    return body, stdout, stderr


def test_acl_run_as_sets_the_job_account(make_server, accounts):
    first, _ = accounts
    server = make_server(run_as={"user@example.com": first})
    with server.client("user") as client:
        body, stdout, _ = run(client, "id -un; id -u; echo $USER $HOME; pwd")

    lines = stdout.decode().splitlines()
    assert body["runAs"] == first
    assert lines[0] == first
    assert int(lines[1]) == int(subprocess.check_output(["id", "-u", first]))
    assert lines[2].split()[0] == first
    assert lines[3] == "/"  # the account has no home folder


def test_job_gets_the_account_groups(make_server, accounts):
    first, _ = accounts
    server = make_server(run_as={"user@example.com": first})
    with server.client("user") as client:
        _, stdout, _ = run(client, "id -G")

    expected = subprocess.check_output(["id", "-G", first]).split()
    assert sorted(stdout.split()) == sorted(expected)


def test_default_run_as_applies_without_acl_entry(make_server, accounts):
    _, second = accounts
    server = make_server(default_run_as=second)
    with server.client("admin") as client:
        body, stdout, _ = run(client, "id -un")

    assert stdout == f"{second}\n".encode()
    assert body["runAs"] == second


def test_output_of_account_job_is_kept_private(make_server, accounts):
    first, second = accounts
    server = make_server(
        run_as={"user@example.com": first, "other@example.com": second}
    )
    with server.client("user") as user, server.client("other") as other:
        secret_body, secret, _ = run(user, "echo first-secret")
        jobs_dir = server.state_dir / "jobs" / str(secret_body["jobID"])

        _, stdout, stderr = run(other, f"cat {jobs_dir}/stdout; ls {server.state_dir}")

    assert secret == b"first-secret\n"
    assert b"first-secret" not in stdout
    assert b"Permission denied" in stderr
    assert (jobs_dir / "stdout").stat().st_mode & 0o777 == 0o600


def test_missing_account_gets_a_clear_error(make_server):
    server = make_server(run_as={"user@example.com": "alpsnosuchaccount"})
    with server.client("user") as client:
        response = client.post("/start", json={"job": "true"})

    assert response.status_code == 500
    assert "no such account" in response.json()["error"]
    assert "alpsnosuchaccount" in response.json()["error"]


def test_worker_refuses_a_missing_default_account(tmp_path):
    (tmp_path / "run").mkdir(mode=0o700)
    config = tmp_path / "server.toml"
    config.write_text(
        f'[worker]\nsocket = "{tmp_path}/run/w.sock"\nstate_dir = "{tmp_path}/s"\n'
        'default_run_as = "alpsnosuchaccount"\n'
    )

    result = subprocess.run(
        [console_script("alps-worker"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert "default_run_as 'alpsnosuchaccount' is not an account" in result.stderr
