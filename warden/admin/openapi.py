"""
The OpenAPI 3 document of the admin API, served at ``/api/v1/openapi.json``.

Built from the same route table the server dispatches on: a test checks that
every route has an operation here and every operation a route.
"""

from __future__ import annotations

from typing import Any

from warden import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}
_OBJECT = {"type": "object"}
_NUMBER = {"type": "string", "pattern": "^[0-9]{1,32}$"}


def _param(
    name: str, where: str, schema: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema}


_LIMIT = _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000})
_CURSOR = _param("cursor", "query", {"type": "string"})
_SINCE = _param("since", "query", {"type": "string"})
_UNTIL = _param("until", "query", {"type": "string"})


def _body(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: int = 200,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    public: bool = False,
    extra: tuple[int, ...] = (),
    ok_content: str = "application/json",
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if ok == 204:
        responses["204"] = {"description": "done"}
    else:
        responses[str(ok)] = {
            "description": "ok",
            "content": {
                ok_content: {
                    "schema": _OBJECT if ok_content.endswith("json") else {"type": "string"}
                }
            },
        }
    codes = {400, 404, 405, 413, 415, *extra}
    if not public:
        codes |= {401, 403}
    for code in sorted(codes):
        responses[str(code)] = {
            "description": "error",
            "content": {"application/json": {"schema": _ERROR}},
        }
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    if public:
        op["security"] = []
    return op


_EXT_FIELDS = {
    "name": {"type": "string", "maxLength": 128},
    "enabled": {"type": "boolean"},
    "qualify": {"type": "boolean"},
    "ring_timeout": {
        "type": "number",
        "nullable": True,
        "minimum": 0,
        "maximum": 600,
        "description": "seconds a call rings before it counts as unanswered (voicemail,"
        " forward on no answer); 0 or null: the default",
    },
    "algorithms": {
        "type": "array",
        "items": {"type": "string", "enum": ["MD5", "SHA-256"]},
        "uniqueItems": True,
    },
}


def paths() -> dict[str, dict[str, Any]]:
    """Path -> method (lower case) -> operation."""
    number = [_param("number", "path", _NUMBER)]
    aor = [_param("aor", "path", _NUMBER)]
    call_id = [_param("call_id", "path", {"type": "string", "pattern": "^[A-Za-z0-9]{1,64}$"})]
    token_id = [_param("token_id", "path", {"type": "string", "pattern": "^[0-9a-f]{16}$"})]
    return {
        "/auth/login": {
            "post": _op(
                "Log in; returns a session token",
                body=_body(
                    {
                        "username": {"type": "string", "minLength": 1, "maxLength": 64},
                        "password": {"type": "string"},
                        "code": {"type": "string"},
                    },
                    ["username", "password"],
                ),
                public=True,
                extra=(429, 503),
            )
        },
        "/auth/mfa/enrol": {"post": _op("Start TOTP enrolment", body=_body({}), extra=(409,))},
        "/auth/mfa/confirm": {
            "post": _op(
                "Confirm TOTP enrolment with a code",
                body=_body({"code": {"type": "string"}}, ["code"]),
                extra=(409,),
            )
        },
        "/auth/password": {
            "post": _op(
                "Change the account's password",
                204,
                body=_body(
                    {
                        "current_password": {"type": "string"},
                        "new_password": {"type": "string"},
                    },
                    ["current_password", "new_password"],
                ),
            )
        },
        "/tokens": {
            "get": _op("List API tokens (never their secrets)"),
            "post": _op(
                "Create an API token (shown once)",
                201,
                body=_body(
                    {
                        "name": {"type": "string", "pattern": "^[\\w .@-]{1,64}$"},
                        "scopes": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "string", "enum": ["read", "write", "calls"]},
                        },
                    },
                    ["name", "scopes"],
                ),
            ),
        },
        "/tokens/{token_id}": {"delete": _op("Revoke an API token", 204, token_id)},
        "/status": {"get": _op("Version, uptime, node, FIPS mode, SIP workers and counts")},
        "/extensions": {
            "get": _op("List extensions"),
            "post": _op(
                "Create an extension (a generated password is returned once)",
                201,
                body=_body(
                    {
                        **_EXT_FIELDS,
                        "number": _NUMBER,
                        "password": {"type": "string", "minLength": 8, "maxLength": 128},
                    },
                    ["number"],
                ),
                extra=(409,),
            ),
        },
        "/extensions/{number}": {
            "get": _op("One extension", params=number),
            "patch": _op("Change an extension", params=number, body=_body(_EXT_FIELDS)),
            "delete": _op("Remove an extension", 204, number),
        },
        "/extensions/{number}/password": {
            "post": _op(
                "Reset the SIP password; the new one is returned once",
                params=number,
                body=_body({}),
            )
        },
        "/registrations": {
            "get": _op(
                "List registrations",
                params=[_LIMIT, _CURSOR, _param("aor", "query", {"type": "string"})],
            )
        },
        "/registrations/{aor}": {
            "get": _op("The registrations of one AOR", params=aor),
            "delete": _op(
                "Remove (kick) an AOR's registrations, or one with ?key=",
                params=[*aor, _param("key", "query", {"type": "string"})],
            ),
        },
        "/calls": {"get": _op("Calls in progress")},
        "/calls/{call_id}": {
            "get": _op("One call in progress on this node", params=call_id),
            "delete": _op("Hang up a call", 204, call_id),
        },
        "/cdrs": {
            "get": _op(
                "Call records; format=csv for CSV",
                params=[
                    _SINCE,
                    _UNTIL,
                    _param("extension", "query", {"type": "string"}),
                    _param("disposition", "query", {"type": "string"}),
                    _LIMIT,
                    _CURSOR,
                    _param("format", "query", {"type": "string", "enum": ["json", "csv"]}),
                ],
            )
        },
        "/audit": {
            "get": _op(
                "The audit log",
                params=[
                    _SINCE,
                    _UNTIL,
                    _param("actor", "query", {"type": "string"}),
                    _LIMIT,
                    _CURSOR,
                ],
            )
        },
        "/drain": {
            "get": _op("Drain status (of every SIP worker)", extra=(409, 503)),
            "post": _op(
                "Start draining (every SIP worker): no new calls, wait for calls to end",
                202,
                body=_body({"timeout": {"type": "number", "minimum": 0, "maximum": 86400}}),
                extra=(409, 503),
            ),
        },
        "/openapi.json": {"get": _op("This document", public=True)},
    }


#: The helpers the operations of plugins' endpoints are built with
#: (L{warden.admin.plugin_endpoints}).
operation = _op
request_body = _body
parameter = _param


def document(extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 document, with the ``extra`` operations of plugins' endpoints."""
    all_paths = paths()
    for path, operations in (extra or {}).items():
        all_paths.setdefault(path, {}).update(operations)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Warden admin API", "version": __version__},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": all_paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
    }
