"""Generated requests against a real API: no 5xx, and every body keeps the contract.

Hypothesis builds requests from the shapes the API takes (methods, paths with odd
IDs, query parameters, Range headers, JSON and non-JSON bodies). Each reply must
be below 500; a JSON reply carries ``status`` equal to the HTTP status, an error
is exactly ``{"status", "error"}``, and a success matches the OpenAPI document.
Start requests never run a generated command: any command string that would be
accepted is replaced by ``true``, so the fuzzing cannot run arbitrary shell code.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from helpers import AlpsServer, running_server, wait_stopped

SEGMENTS = st.one_of(
    st.integers(min_value=-5, max_value=2**70).map(str),
    st.integers(min_value=1, max_value=40).map(str),
    st.text(max_size=24),
    st.sampled_from(["stdout", "stderr", "0x10", "1e3", "%", "..", " 1", "1 "]),
)
PATH_TEMPLATES = [
    "/start",
    "/stop/{}",
    "/status/{}",
    "/output/{}",
    "/output/{}/{}",
    "/list",
    "/take/{}",
    "/openapi.json",
    "/{}",
    "/{}/{}/{}",
]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
START_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "job": JSON_VALUES,
        "limits": st.one_of(
            JSON_VALUES,
            st.fixed_dictionaries(
                {},
                optional={
                    "memory": JSON_VALUES | st.sampled_from(["64M", "1G", "10K"]),
                    "cpu": JSON_VALUES | st.sampled_from([0.5, 0, 9999]),
                    "pids": JSON_VALUES | st.sampled_from([1, 50, 10**9]),
                },
            ),
        ),
        "extra": JSON_VALUES,
    },
)


@st.composite
def requests(draw: st.DrawFn) -> dict:
    template = draw(st.sampled_from(PATH_TEMPLATES))
    segments = [quote(draw(SEGMENTS), safe="") for _ in range(template.count("{}"))]
    path = template.format(*segments)
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    params = draw(
        st.dictionaries(
            st.sampled_from(["offset", "limit", "follow", "all", "x"]),
            st.one_of(
                st.integers(min_value=-3, max_value=2**64).map(str),
                st.sampled_from(["true", "false", "yes", "maybe", ""]),
                st.text(max_size=10),
            ),
            max_size=3,
        )
    )
    # A follow of a running job lasts as long as the job, so keep generated
    # follows on short jobs only: all jobs started here run "true".
    headers: dict[str, bytes] = {}
    if draw(st.booleans()):
        # HTTP header values cannot hold control characters, so none are drawn.
        header_text = st.text(
            alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=20
        )
        range_text = draw(
            st.one_of(
                st.sampled_from(["bytes=0-1", "bytes=-5", "bytes=3-", "bytes=1-0"]),
                header_text.map(lambda text: "bytes=" + text),
                header_text,
            )
        )
        # Raw bytes, so that non-ASCII text reaches the server as UTF-8; HTTP
        # also forbids white space at either end of a value.
        headers["range"] = range_text.strip(" \t").encode()
    body_kind = draw(st.sampled_from(["none", "json", "start", "bytes"]))
    content = None
    if body_kind == "json":
        content = json.dumps(draw(JSON_VALUES)).encode()
    elif body_kind == "start":
        content = json.dumps(_safe(draw(START_BODIES))).encode()
    elif body_kind == "bytes":
        content = draw(st.binary(max_size=64))
    return {
        "method": method,
        "url": path,
        "params": params,
        "headers": headers,
        "content": content,
    }


def _safe(body: dict) -> dict:
    """Replace any command that the API could accept by ``true``."""
    command = body.get("job")
    if isinstance(command, str) and command.strip():
        body["job"] = "true"
    return body


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory, pki):
    folder = tmp_path_factory.mktemp("fuzz")
    with running_server(folder, pki) as server:
        yield server


@pytest.fixture(scope="module")
def schema_check(fuzz_server: AlpsServer):
    with fuzz_server.client("admin") as client:
        document = client.get("/openapi.json").json()
    registry = Registry().with_resource(
        "urn:alps", Resource.from_contents(document, default_specification=DRAFT202012)
    )

    def check(schema_name: str, body: dict) -> None:
        schema = {"$ref": f"urn:alps#/components/schemas/{schema_name}"}
        jsonschema.Draft202012Validator(schema, registry=registry).validate(body)

    return check


SUCCESS_SCHEMAS = {
    "start": "Started",
    "stop": "Job",
    "status": "Job",
    "output": "Output",
    "list": "JobList",
    "take": "Taken",
}


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(request=requests(), as_admin=st.booleans())
def test_generated_requests_keep_the_contract(
    fuzz_server: AlpsServer, schema_check, request: dict, as_admin: bool
):
    with fuzz_server.client("admin" if as_admin else "user", timeout=20) as client:
        response = client.request(**request)

    assert response.status_code < 500, (request, response.text)
    if response.headers.get("content-type") != "application/json":
        assert response.status_code in (200, 206), request
        return
    body = response.json()
    if request["url"] == "/openapi.json" and response.status_code == 200:
        assert body["openapi"].startswith("3.1")
        return
    assert body["status"] == response.status_code, (request, body)
    if response.status_code >= 400:
        assert set(body) == {"status", "error"}, (request, body)
        assert isinstance(body["error"], str) and body["error"], body
        assert "Traceback" not in body["error"]
        return
    endpoint = request["url"].strip("/").split("/")[0]
    schema_check(SUCCESS_SCHEMAS[endpoint], body)


def test_openapi_needs_a_known_identity(fuzz_server: AlpsServer):
    with fuzz_server.client("stranger") as client:
        response = client.get("/openapi.json")

    assert response.status_code == 401


def test_openapi_document_is_valid(fuzz_server: AlpsServer):
    with fuzz_server.client("user") as client:
        document = client.get("/openapi.json").json()

    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) >= {"/start", "/list", "/output/{jobID}/{stream}"}
    jsonschema.Draft202012Validator.check_schema(
        document["components"]["schemas"]["Job"]
    )


def test_server_is_healthy_after_fuzzing(fuzz_server: AlpsServer):
    with fuzz_server.client("user") as client:
        job_id = client.post("/start", json={"job": "echo alive"}).json()["jobID"]
        wait_stopped(client, job_id)
        output = client.get(f"/output/{job_id}/stdout")

    assert output.content == b"alive\n"
