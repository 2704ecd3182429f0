"""TLS and identity: who may connect, and who the API thinks they are."""

from __future__ import annotations

import ssl

import httpx
import pytest

from alps import certs
from alps.errors import NotAuthorized
from alps.services.api.identity import identity_from_peercert

from helpers import AlpsServer, Pki, client_context

UNAUTHORIZED = {"status": 401, "error": "you are not authorized to perform that action"}


def get_list(server: AlpsServer, context: ssl.SSLContext) -> httpx.Response:
    with httpx.Client(base_url=server.base_url, verify=context, timeout=10) as client:
        return client.get("/list")


def context_for(pki: Pki, name: str, **issue_options) -> ssl.SSLContext:
    pki.issue(name, **issue_options)
    return client_context(pki, name)


# Handshake ---------------------------------------------------------------------


def test_client_without_certificate_fails_handshake(alps_server: AlpsServer):
    context = ssl.create_default_context(cafile=str(alps_server.pki.ca_cert))

    with pytest.raises(httpx.HTTPError):
        get_list(alps_server, context)


def test_certificate_from_other_ca_fails_handshake(alps_server: AlpsServer, tmp_path):
    rogue = certs.make_ca("Rogue CA")
    certs.issue_client(rogue, "user@example.com").write(
        tmp_path / "rogue.crt", tmp_path / "rogue.key"
    )
    context = ssl.create_default_context(cafile=str(alps_server.pki.ca_cert))
    context.load_cert_chain(tmp_path / "rogue.crt", tmp_path / "rogue.key")

    with pytest.raises(httpx.HTTPError):
        get_list(alps_server, context)


def test_tls12_client_fails_handshake(alps_server: AlpsServer):
    context = client_context(alps_server.pki, "user")
    context.maximum_version = ssl.TLSVersion.TLSv1_2

    with pytest.raises(httpx.HTTPError):
        get_list(alps_server, context)


def test_tls13_client_with_valid_certificate_connects(alps_server: AlpsServer):
    response = get_list(alps_server, client_context(alps_server.pki, "user"))

    assert response.status_code == 200


# Identity --------------------------------------------------------------------------


def test_identity_from_san_email(alps_server: AlpsServer):
    context = context_for(
        alps_server.pki, "san-only", email="user@example.com", common_name="Someone"
    )

    assert get_list(alps_server, context).status_code == 200


def test_identity_from_subject_email_address(alps_server: AlpsServer):
    context = context_for(
        alps_server.pki,
        "subject-email",
        common_name="Someone",
        subject_email="user@example.com",
    )

    assert get_list(alps_server, context).status_code == 200


def test_identity_from_common_name(alps_server: AlpsServer):
    context = context_for(alps_server.pki, "cn-only", common_name="user@example.com")

    assert get_list(alps_server, context).status_code == 200


def test_identity_ignores_case(alps_server: AlpsServer):
    context = context_for(alps_server.pki, "upper", email="User@EXAMPLE.com")

    response = get_list(alps_server, context)

    assert response.status_code == 200


def test_two_san_emails_are_refused(alps_server: AlpsServer):
    context = context_for(
        alps_server.pki,
        "two-emails",
        email="user@example.com",
        extra_emails=("admin@example.com",),
    )

    response = get_list(alps_server, context)

    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


def test_escaped_common_name_is_taken_whole(make_server, pki: Pki):
    server = make_server(extra_users={"admin, cn=root": "user"})
    tricky = context_for(pki, "tricky", common_name="admin, CN=root")

    with httpx.Client(base_url=server.base_url, verify=tricky, timeout=10) as client:
        start = client.post("/start", json={"job": "true"})

    assert start.status_code == 200
    assert start.json()["owner"] == "admin, cn=root"


def test_peercert_with_san_email_wins():
    cert = {
        "subject": ((("commonName", "cn@example.com"),),),
        "subjectAltName": (("DNS", "host"), ("email", "San@Example.com")),
    }

    assert identity_from_peercert(cert) == "san@example.com"


def test_peercert_with_two_common_names_is_refused():
    cert = {"subject": ((("commonName", "a"),), (("commonName", "b"),))}

    with pytest.raises(NotAuthorized):
        identity_from_peercert(cert)


def test_peercert_without_any_name_is_refused():
    with pytest.raises(NotAuthorized):
        identity_from_peercert({"subject": ((("organizationName", "x"),),)})


def test_kelvin_sign_does_not_match_the_letter_k(make_server, pki: Pki):
    server = make_server(extra_users={"kate@example.com": "admin"})
    kelvin = context_for(pki, "kelvin", common_name="\u212aate@example.com")

    assert get_list(server, kelvin).status_code == 401


def test_spaces_around_an_identity_count(alps_server: AlpsServer):
    padded = context_for(alps_server.pki, "padded", common_name=" user@example.com ")

    assert get_list(alps_server, padded).status_code == 401


def test_empty_san_email_does_not_fall_through_to_cn():
    cert = {
        "subject": ((("commonName", "admin@example.com"),),),
        "subjectAltName": (("email", ""),),
    }

    with pytest.raises(NotAuthorized):
        identity_from_peercert(cert)
