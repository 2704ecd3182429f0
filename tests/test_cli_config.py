"""``alps config``: the CLI's config file, and the messages while it is incomplete."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest
from cli_support import alps_env, default_config, run_alps

from alps import certs

from helpers import Pki


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def read_toml(path: Path) -> dict:
    with path.open("rb") as file:
        return tomllib.load(file)


def configure_all(env: dict[str, str], pki: Pki, address: str = "127.0.0.1:8443"):
    for args in (
        ("config", "host", address),
        ("config", "ca", pki.ca_cert),
        ("config", "user", pki.cert("user"), pki.key("user")),
    ):
        result = run_alps(*args, env=env)
        assert result.code == 0, result.err


# Writing the file ----------------------------------------------------------------


def test_config_writes_toml_of_the_documented_shape(tmp_path: Path, pki: Pki):
    env = alps_env(tmp_path)

    configure_all(env, pki)

    assert read_toml(default_config(tmp_path)) == {
        "server": {"address": "127.0.0.1:8443", "ca": str(pki.ca_cert)},
        "client": {"cert": str(pki.cert("user")), "key": str(pki.key("user"))},
    }


def test_config_file_is_created_with_mode_0600(tmp_path: Path):
    env = alps_env(tmp_path)

    result = run_alps("config", "host", "127.0.0.1:8443", env=env)

    assert result.code == 0
    assert file_mode(default_config(tmp_path)) == 0o600


def test_config_folder_is_created_with_mode_0700(tmp_path: Path):
    env = alps_env(tmp_path)

    run_alps("config", "host", "127.0.0.1:8443", env=env)

    assert file_mode(default_config(tmp_path).parent) == 0o700


def test_config_rewrite_makes_an_open_file_private(tmp_path: Path):
    path = tmp_path / "alps.toml"
    path.write_text('[server]\naddress = "127.0.0.1:1"\n')
    path.chmod(0o644)

    result = run_alps("config", "host", "127.0.0.1:8443", env=alps_env(tmp_path, path))

    assert result.code == 0
    assert file_mode(path) == 0o600


def test_config_uses_alps_config_when_set(tmp_path: Path):
    path = tmp_path / "elsewhere" / "alps.toml"

    result = run_alps("config", "host", "[::1]:9000", env=alps_env(tmp_path, path))

    assert result.code == 0
    assert read_toml(path)["server"]["address"] == "[::1]:9000"
    assert not default_config(tmp_path).exists()


def test_config_host_reports_where_it_wrote(tmp_path: Path):
    result = run_alps("config", "host", "127.0.0.1:8443", env=alps_env(tmp_path))

    assert result.out == (
        f"Server address set to 127.0.0.1:8443 in {default_config(tmp_path)}\n"
    )


def test_config_keeps_other_settings(tmp_path: Path, pki: Pki):
    env = alps_env(tmp_path)
    configure_all(env, pki)

    run_alps("config", "host", "localhost:9443", env=env)

    data = read_toml(default_config(tmp_path))
    assert data["server"]["address"] == "localhost:9443"
    assert data["server"]["ca"] == str(pki.ca_cert)
    assert data["client"]["key"] == str(pki.key("user"))


def test_config_stores_absolute_paths(tmp_path: Path, pki: Pki):
    env = alps_env(tmp_path)

    result = run_alps("config", "ca", "ca.crt", env=env, cwd=pki.folder)

    assert result.code == 0
    assert read_toml(default_config(tmp_path))["server"]["ca"] == str(pki.ca_cert)


# Rejected values -----------------------------------------------------------------


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:", ":8443", "h:0", "h:x"])
def test_config_host_rejects_invalid_address(tmp_path: Path, address: str):
    result = run_alps("config", "host", address, env=alps_env(tmp_path))

    assert result.code == 1
    assert f"alps: error: invalid address {address!r}" in result.err
    assert not default_config(tmp_path).exists()


def test_config_ca_rejects_missing_file(tmp_path: Path):
    missing = tmp_path / "nope.crt"

    result = run_alps("config", "ca", missing, env=alps_env(tmp_path))

    assert result.code == 1
    assert result.err == (
        f"alps: error: cannot read CA certificate {missing}: "
        "No such file or directory\n"
    )


def test_config_ca_rejects_file_that_is_not_pem(tmp_path: Path):
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate\n")

    result = run_alps("config", "ca", junk, env=alps_env(tmp_path))

    assert result.code == 1
    assert f"CA certificate {junk} is not a valid PEM certificate" in result.err


def test_config_user_rejects_folder_as_key(tmp_path: Path, pki: Pki):
    key = tmp_path / "keys"
    key.mkdir()

    result = run_alps("config", "user", pki.cert("user"), key, env=alps_env(tmp_path))

    assert result.code == 1
    assert f"cannot read client key {key}: Is a directory" in result.err


def test_config_user_rejects_missing_key(tmp_path: Path, pki: Pki):
    key = tmp_path / "missing.key"

    result = run_alps("config", "user", pki.cert("user"), key, env=alps_env(tmp_path))

    assert result.code == 1
    assert f"cannot read client key {key}: No such file or directory" in result.err


def test_config_user_rejects_key_of_another_certificate(tmp_path: Path, pki: Pki):
    env = alps_env(tmp_path)

    result = run_alps("config", "user", pki.cert("user"), pki.key("admin"), env=env)

    assert result.code == 1
    assert "cannot be used together" in result.err
    assert not default_config(tmp_path).exists()


def test_config_rejects_unknown_setting_in_file(tmp_path: Path):
    path = tmp_path / "alps.toml"
    path.write_text('[server]\nadress = "127.0.0.1:8443"\n')

    result = run_alps("list", env=alps_env(tmp_path, path))

    assert result.code == 1
    assert f"config file {path}: unknown setting server.adress" in result.err


def test_config_rejects_invalid_toml(tmp_path: Path):
    path = tmp_path / "alps.toml"
    path.write_text("[server\n")

    result = run_alps("list", env=alps_env(tmp_path, path))

    assert result.code == 1
    assert f"config file {path} is not valid TOML" in result.err


# Showing the settings ------------------------------------------------------------


def test_config_show_lists_path_and_settings(tmp_path: Path, pki: Pki):
    env = alps_env(tmp_path)
    configure_all(env, pki)

    result = run_alps("config", "show", env=env)

    assert result.code == 0
    assert result.out.splitlines() == [
        f"Config file: {default_config(tmp_path)}",
        "  server.address = 127.0.0.1:8443",
        f"  server.ca      = {pki.ca_cert}",
        f"  client.cert    = {pki.cert('user')}",
        f"  client.key     = {pki.key('user')}",
    ]


def test_config_show_names_commands_for_unset_settings(tmp_path: Path):
    result = run_alps("config", env=alps_env(tmp_path))

    assert result.code == 0
    assert "(does not exist yet)" in result.out
    assert "server.ca      = not set; set it with: alps config ca FILE" in result.out


# An incomplete config ------------------------------------------------------------

JOB_COMMANDS = [
    ("start", "true"),
    ("stop", "1"),
    ("status", "1"),
    ("output", "1"),
    ("list",),
    ("take", "1"),
]


@pytest.mark.parametrize("args", JOB_COMMANDS, ids=lambda args: args[0])
def test_job_command_without_config_names_every_setup_command(
    tmp_path: Path, args: tuple[str, ...]
):
    result = run_alps(*args, env=alps_env(tmp_path))

    assert result.code == 1
    assert result.err.startswith(
        f"alps: error: the config file {default_config(tmp_path)} is incomplete:\n"
    )
    assert "set it with: alps config host HOST:PORT" in result.err
    assert "set it with: alps config ca FILE" in result.err
    assert "set it with: alps config user CERT KEY" in result.err
    assert "or run 'alps dev'" in result.err


@pytest.mark.parametrize(
    ("skipped", "expected", "others"),
    [
        ("host", "no server address; set it with: alps config host", ["config ca"]),
        ("ca", "no CA certificate; set it with: alps config ca FILE", ["config host"]),
        (
            "user",
            "no client certificate; set it with: alps config user CERT KEY",
            ["config host", "config ca"],
        ),
    ],
)
def test_incomplete_config_names_the_missing_part(
    tmp_path: Path, pki: Pki, skipped: str, expected: str, others: list[str]
):
    env = alps_env(tmp_path)
    steps = {
        "host": ("config", "host", "127.0.0.1:8443"),
        "ca": ("config", "ca", pki.ca_cert),
        "user": ("config", "user", pki.cert("user"), pki.key("user")),
    }
    for name, args in steps.items():
        if name != skipped:
            run_alps(*args, env=env)

    result = run_alps("list", env=env)

    assert result.code == 1
    assert expected in result.err
    for other in others:
        assert other not in result.err
    assert "alps dev" not in result.err


def test_config_without_key_names_user_command(tmp_path: Path, pki: Pki):
    path = tmp_path / "alps.toml"
    path.write_text(
        '[server]\naddress = "127.0.0.1:8443"\n'
        f'ca = "{pki.ca_cert}"\n'
        f'[client]\ncert = "{pki.cert("user")}"\n'
    )

    result = run_alps("list", env=alps_env(tmp_path, path))

    assert result.code == 1
    assert "no client key; set it with: alps config user CERT KEY" in result.err


def test_config_with_deleted_key_names_its_path(tmp_path: Path, pki: Pki):
    key = tmp_path / "gone.key"
    certs.issue_client(pki.ca, "user@example.com").write(tmp_path / "gone.crt", key)
    env = alps_env(tmp_path)
    configure_all(env, pki)
    run_alps("config", "user", tmp_path / "gone.crt", key, env=env)
    key.unlink()

    result = run_alps("list", env=env)

    assert result.code == 1
    assert result.err == (
        f"alps: error: cannot read client key {key}: No such file or directory\n"
    )
