"""
Authentication endpoints of the admin API: login, MFA enrolment, password
change, and API token management (sessions only: ``admin`` scope).
"""

from __future__ import annotations

import re

from warden.admin.auth import ENROL_SCOPE, AdminAuth, check_new_password
from warden.admin.http import ApiCall, Reply, Route, json_reply
from warden.errors import ApiError
from warden.model.admin import SCOPES

TOKEN_ID = r"[0-9a-f]{16}"


class AuthApi:
    """``/auth/*`` and ``/tokens``."""

    def __init__(self, auth: AdminAuth) -> None:
        self.auth = auth

    async def login(self, call: ApiCall) -> Reply:
        body = call.json({"username": str, "password": str, "code": str}, ["username", "password"])
        username = body["username"]
        if not 0 < len(username) <= 64:
            raise ApiError(400, "invalid_field", "username: 1..64 characters")
        call.audit_actor = username
        result = await self.auth.login(username, body["password"], body.get("code"), call.source)
        return json_reply(result, target=username)

    def _account(self, call: ApiCall) -> str:
        assert call.principal is not None
        if call.principal.name.startswith("token:"):
            raise ApiError(403, "forbidden", "API tokens cannot do this; log in")
        return call.principal.account

    async def enrol(self, call: ApiCall) -> Reply:
        call.json({})
        return json_reply(await self.auth.enrol_mfa(self._account(call)))

    async def confirm(self, call: ApiCall) -> Reply:
        body = call.json({"code": str}, ["code"])
        await self.auth.confirm_mfa(self._account(call), body["code"])
        return json_reply({"mfa_enabled": True, "next": "log in again with a code"})

    async def password(self, call: ApiCall) -> Reply:
        body = call.json({"current_password": str, "new_password": str},
                         ["current_password", "new_password"])  # fmt: skip
        check_new_password(body["new_password"])
        await self.auth.change_password(
            self._account(call), body["current_password"], body["new_password"]
        )
        return Reply(204)

    async def list_tokens(self, call: ApiCall) -> Reply:
        call.query_params(())
        tokens = await self.auth.store.list_tokens()
        return json_reply({"items": [t.public() for t in tokens]})

    async def create_token(self, call: ApiCall) -> Reply:
        body = call.json({"name": str, "scopes": list}, ["name", "scopes"])
        name, scopes = body["name"], body["scopes"]
        if not re.fullmatch(r"[\w .@-]{1,64}", name):
            raise ApiError(400, "invalid_field", "name: 1..64 letters, digits, ' .@-_'")
        if not scopes or not all(isinstance(s, str) and s in SCOPES for s in scopes):
            raise ApiError(400, "invalid_field", f"scopes: a non-empty list from {SCOPES}")
        full, token = await self.auth.create_token(
            self._account(call), name, tuple(dict.fromkeys(scopes))
        )
        return json_reply({**token.public(), "token": full}, 201, target=token.token_id,
                          detail={"scopes": list(token.scopes)})  # fmt: skip

    async def revoke_token(self, call: ApiCall) -> Reply:
        token_id = call.params["token_id"]
        if not await self.auth.revoke_token(token_id):
            raise ApiError(404, "not_found", "no such active token")
        return Reply(204)


def auth_routes(auth: AdminAuth) -> list[Route]:
    """The routes of this module."""
    api = AuthApi(auth)
    return [
        Route("POST", "auth/login", api.login, None),
        Route("POST", "auth/mfa/enrol", api.enrol, ENROL_SCOPE),
        Route("POST", "auth/mfa/confirm", api.confirm, ENROL_SCOPE),
        Route("POST", "auth/password", api.password, "admin"),
        Route("GET", "tokens", api.list_tokens, "admin"),
        Route("POST", "tokens", api.create_token, "admin"),
        Route("DELETE", "tokens/{token_id}", api.revoke_token, "admin", {"token_id": TOKEN_ID}),
    ]
