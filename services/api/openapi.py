"""The OpenAPI 3.1 description of the API, served at ``GET /openapi.json``."""

from __future__ import annotations

from typing import Any

from alps import __version__

_TIME = {"type": "string", "format": "date-time", "pattern": "Z$"}
_JOB_ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}

_LIMITS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "memory": {
            "description": "bytes, or a size with a binary unit such as 256M",
            "oneOf": [{"type": "integer", "minimum": 1048576}, {"type": "string"}],
        },
        "cpu": {"type": "number", "exclusiveMinimum": 0, "description": "CPUs"},
        "pids": {"type": "integer", "minimum": 1},
    },
}

# A job's status object, as it appears in a reply and in the list of jobs.
_JOB_STATUS = {
    "type": "object",
    "required": ["jobID", "job", "owner", "startTime", "jobStatus"],
    "properties": {
        "jobID": _JOB_ID,
        "job": {"type": "string"},
        "owner": {"type": "string"},
        "startTime": _TIME,
        "jobStatus": {"enum": ["running", "stopped"]},
        "stopTime": _TIME,
        "outputExpires": _TIME,
        "exitCode": {"type": ["integer", "null"]},
        "signal": {"type": "string"},
        "reason": {"type": "string"},
        "limits": _LIMITS,
        "runAs": {"type": "string"},
    },
}

_JOB = {
    "allOf": [
        {"$ref": "#/components/schemas/JobStatus"},
        {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": 200}},
        },
    ]
}

_OUTPUT = {
    "allOf": [
        {"$ref": "#/components/schemas/Job"},
        {
            "type": "object",
            "required": ["stdoutSize", "stdoutBytes", "stderrSize", "stderrBytes"],
            "properties": {
                "stdoutSize": {"type": "integer", "minimum": 0},
                "stdoutBytes": {"type": "string", "contentEncoding": "base64"},
                "stdoutOffset": {"type": "integer", "minimum": 0},
                "stderrSize": {"type": "integer", "minimum": 0},
                "stderrBytes": {"type": "string", "contentEncoding": "base64"},
                "stderrOffset": {"type": "integer", "minimum": 0},
            },
        },
    ]
}

_ERROR = {
    "type": "object",
    "required": ["status", "error"],
    "additionalProperties": False,
    "properties": {
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "error": {"type": "string", "minLength": 1},
    },
}


def _json(schema: str, description: str = "success") -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}
        },
    }


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _json("Error", "error") for status in statuses}


_COMMON = (400, 401, 404, 405, 500, 503)
_ID_PARAMETER = {"name": "jobID", "in": "path", "required": True, "schema": _JOB_ID}


def document() -> dict[str, Any]:
    """Return the OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "ALPS", "version": __version__},
        "security": [{"clientCertificate": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"clientCertificate": {"type": "mutualTLS"}},
            "schemas": {
                "Error": _ERROR,
                "Limits": _LIMITS,
                "JobStatus": _JOB_STATUS,
                "Job": _JOB,
                "Output": _OUTPUT,
                "Started": {
                    "type": "object",
                    "required": ["status", "jobID", "owner", "startTime"],
                    "properties": {
                        "status": {"const": 200},
                        "jobID": _JOB_ID,
                        "owner": {"type": "string"},
                        "startTime": _TIME,
                    },
                },
                "JobList": {
                    "type": "object",
                    "required": ["status", "jobs"],
                    "properties": {
                        "status": {"const": 200},
                        "jobs": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/JobStatus"},
                        },
                    },
                },
                "Taken": {
                    "type": "object",
                    "required": ["status", "jobID", "owner", "oldOwner"],
                    "properties": {
                        "status": {"const": 200},
                        "jobID": _JOB_ID,
                        "owner": {"type": "string"},
                        "oldOwner": {"type": "string"},
                    },
                },
            },
        },
    }


def _paths() -> dict[str, Any]:
    return {
        "/start": {
            "post": {
                "summary": "Start a command with /bin/sh -c",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["job"],
                                "additionalProperties": False,
                                "properties": {
                                    "job": {"type": "string", "minLength": 1},
                                    "limits": {"$ref": "#/components/schemas/Limits"},
                                },
                            }
                        }
                    },
                },
                "responses": {"200": _json("Started"), **_errors(*_COMMON, 413)},
            }
        },
        "/stop/{jobID}": {
            "post": {
                "summary": "Stop a job and wait until it has stopped",
                "parameters": [_ID_PARAMETER],
                "responses": {"200": _json("Job"), **_errors(*_COMMON)},
            }
        },
        "/status/{jobID}": {
            "get": {
                "summary": "A job's status",
                "parameters": [_ID_PARAMETER],
                "responses": {"200": _json("Job"), **_errors(*_COMMON)},
            }
        },
        "/output/{jobID}": {
            "get": {
                "summary": "A job's status with its output, base64",
                "parameters": [_ID_PARAMETER],
                "responses": {"200": _json("Output"), **_errors(*_COMMON)},
            }
        },
        "/output/{jobID}/{stream}": {
            "get": {
                "summary": "A job's raw stdout or stderr, a window of it, or a follow",
                "parameters": [
                    _ID_PARAMETER,
                    {
                        "name": "stream",
                        "in": "path",
                        "required": True,
                        "schema": {"enum": ["stdout", "stderr"]},
                    },
                    _query("offset", {"type": "integer", "minimum": 0}),
                    _query("limit", {"type": "integer", "minimum": 0}),
                    _query("follow", {"type": "boolean"}),
                    {"name": "Range", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _raw("the stream, or the window asked for"),
                    "206": _raw("the byte range asked for"),
                    **_errors(*_COMMON, 416),
                },
            }
        },
        "/list": {
            "get": {
                "summary": "The caller's jobs; every job with all=true (admins)",
                "parameters": [_query("all", {"type": "boolean"})],
                "responses": {"200": _json("JobList"), **_errors(*_COMMON, 403)},
            }
        },
        "/take/{jobID}": {
            "post": {
                "summary": "Make the calling admin the job's owner",
                "parameters": [_ID_PARAMETER],
                "responses": {"200": _json("Taken"), **_errors(*_COMMON, 403)},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "success",
                        "content": {"application/json": {}},
                    },
                    **_errors(401),
                },
            }
        },
    }


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _raw(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/octet-stream": {}},
    }
