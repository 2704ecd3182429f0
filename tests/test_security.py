"""Security from the outside: forged certificates, the audit log, the ACL's reload."""

from __future__ import annotations

import datetime as dt
import json
import signal
import ssl
import stat
import time

import httpx
import pytest

from helpers import AlpsServer, Pki, client_context, wait_stopped, wait_until

NOW = dt.datetime.now(dt.UTC)


def get_list(server: AlpsServer, context: ssl.SSLContext) -> httpx.Response:
    with httpx.Client(base_url=server.base_url, verify=context, timeout=10) as client:
        return client.get("/list")


def audit_records(server: AlpsServer) -> list[dict]:
    path = server.folder / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def audited(make_server) -> AlpsServer:
    return make_server(api_settings={"audit_log": "audit.jsonl"})


@pytest.mark.parametrize(
    ("name", "validity"),
    [
        (
            "expired",
            {
                "not_before": NOW - dt.timedelta(days=30),
                "not_after": NOW - dt.timedelta(days=1),
            },
        ),
        (
            "not-yet-valid",
            {
                "not_before": NOW + dt.timedelta(days=1),
                "not_after": NOW + dt.timedelta(days=30),
            },
        ),
    ],
)
def test_certificate_outside_validity_fails_handshake(
    audited: AlpsServer, pki: Pki, name, validity
):
    pki.issue(name, "user@example.com", **validity)

    with pytest.raises(httpx.HTTPError):
        get_list(audited, client_context(pki, name))

    log = wait_until(
        lambda: "tls handshake failed" in audited.log("api") and audited.log("api")
    )
    assert "certificate" in log.split("tls handshake failed", 1)[1].lower()


def test_handshake_refusal_is_audited(audited: AlpsServer):
    context = ssl.create_default_context(cafile=str(audited.pki.ca_cert))

    with pytest.raises(httpx.HTTPError):
        get_list(audited, context)

    records = wait_until(
        lambda: [r for r in audit_records(audited) if r["action"] == "handshake"]
    )
    assert records[0]["result"] is None
    assert records[0]["identity"] is None
    assert records[0]["error"]


def test_audit_log_records_each_request(audited: AlpsServer):
    with audited.client("user") as client:
        job_id = client.post("/start", json={"job": "echo SECRET-OUTPUT"}).json()[
            "jobID"
        ]
        wait_stopped(client, job_id)
        client.get(f"/output/{job_id}")
        client.get("/status/999999")

    records = audit_records(audited)
    starts = [r for r in records if r["action"] == "start"]
    outputs = [r for r in records if r["action"] == "output"]
    missing = [r for r in records if r["jobID"] == 999999]
    assert starts[0]["identity"] == "user@example.com"
    assert starts[0]["jobID"] == job_id
    assert starts[0]["result"] == 200
    assert outputs[0]["jobID"] == job_id
    assert missing[0]["result"] == 404
    for record in records:
        assert set(record) >= {"time", "identity", "action", "jobID", "result"}
        assert record["time"].endswith("Z")


def test_audit_log_holds_no_command_output_or_key(audited: AlpsServer):
    with audited.client("user") as client:
        job_id = client.post("/start", json={"job": "echo SECRET-OUTPUT"}).json()[
            "jobID"
        ]
        wait_stopped(client, job_id)
        client.get(f"/output/{job_id}")
        client.get(f"/output/{job_id}/stdout")

    text = (audited.folder / "audit.jsonl").read_text()
    assert "SECRET-OUTPUT" not in text
    assert "PRIVATE KEY" not in text
    assert "SECRET-OUTPUT" not in audited.log("api")
    assert "SECRET-OUTPUT" not in audited.log("worker")


def test_audit_log_records_refusal_with_subject(audited: AlpsServer):
    with audited.client("stranger") as client:
        response = client.get("/list")

    refusal = next(r for r in audit_records(audited) if r["result"] == 401)
    assert response.status_code == 401
    assert refusal["identity"] == "stranger@example.com"
    assert ["commonName", "stranger@example.com"] in refusal["subject"]


def test_audit_log_is_private(audited: AlpsServer):
    with audited.client("user") as client:
        client.get("/list")

    mode = stat.S_IMODE((audited.folder / "audit.jsonl").stat().st_mode)
    assert mode == 0o600


def test_acl_reload_on_sighup_admits_new_user(make_server):
    server = make_server()
    with server.client("stranger") as client:
        assert client.get("/list").status_code == 401
        acl = server.folder / "acl.toml"
        acl.write_text(
            acl.read_text() + '\n[users."stranger@example.com"]\nrole = "user"\n'
        )

        server.processes["api"].send_signal(signal.SIGHUP)

        wait_until(lambda: client.get("/list").status_code == 200)
    assert "acl reloaded" in server.log("api")


def test_invalid_acl_on_sighup_keeps_the_old_one(make_server):
    server = make_server()
    acl = server.folder / "acl.toml"
    acl.write_text('[users."user@example.com"]\nrole = "superuser"\n')

    server.processes["api"].send_signal(signal.SIGHUP)

    log = wait_until(
        lambda: "acl reload failed" in server.log("api") and server.log("api")
    )
    assert str(acl) in log
    assert "invalid role 'superuser'" in log
    with server.client("user") as client, server.client("admin") as admin:
        assert client.get("/list").status_code == 200
        assert admin.get("/list", params={"all": "true"}).status_code == 200


def test_list_all_by_user_is_forbidden(alps_server: AlpsServer):
    with alps_server.client("user") as client:
        response = client.get("/list", params={"all": "true"})

    assert response.status_code == 403
    assert (
        response.json()["error"] == "you are forbidden to list all jobs: not an admin"
    )


def test_follow_ends_when_acl_drops_the_caller(make_server):
    server = make_server()
    with server.client("user") as client:
        job_id = client.post("/start", json={"job": "echo on; sleep 30"}).json()[
            "jobID"
        ]
        with client.stream(
            "GET", f"/output/{job_id}/stdout", params={"follow": "true"}
        ) as response:
            chunks = response.iter_bytes()
            assert next(chunks) == b"on\n"
            acl = server.folder / "acl.toml"
            acl.write_text(
                acl.read_text().replace("user@example.com", "gone@example.com")
            )
            server.processes["api"].send_signal(signal.SIGHUP)
            started = time.monotonic()

            rest = b"".join(chunks)

        assert rest == b""
        assert time.monotonic() - started < 5
        client.post(f"/stop/{job_id}")


def test_refused_handshakes_are_logged_with_a_cap(audited: AlpsServer):
    context = ssl.create_default_context(cafile=str(audited.pki.ca_cert))

    for _ in range(15):
        with pytest.raises(httpx.HTTPError):
            get_list(audited, context)

    handshakes = [r for r in audit_records(audited) if r["action"] == "handshake"]
    logged = audited.log("api").count("tls handshake failed reason=")
    assert len(handshakes) == 15
    assert logged == 10
