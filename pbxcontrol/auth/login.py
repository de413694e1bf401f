"""`/api/json/user/login/` (Enswitch 4.1+): check credentials; with `token=1`, issue a token
(or renew one: refresh); `/api/json/user/logout/`: revoke the token it is called with."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, delete
from sqlalchemy.dialects import postgresql, sqlite

from pbxcontrol.auth.tokens import SCOPES, TokenSigner
from pbxcontrol.db.models import RevokedToken
from pbxcontrol.http.api import ANY_PRIVILEGE, ApiRequest, JsonApi
from pbxcontrol.http.envelope import ApiError, Outcome

LOGIN = "user/login"
LOGOUT = "user/logout"
LOGGED_OUT = "Logged out: this token is revoked."
NO_TOKEN = "user/logout ends the token given as auth_token; give it"
NARROWER = "a token renews with its own scope (or read): log in with a password for scope=all"


def register(api: JsonApi, tokens: TokenSigner) -> None:
    """Core functions, not a plugin's: auth is the core's. Any privilege will do (a panel
    logs in too); what a token may then do is up to each function's own privileges and the
    token's scope. Both are read-only functions: a `read` token may renew itself and log out."""

    def login(request: ApiRequest) -> dict[str, Any]:
        token = request.params.get("token", "0")
        if token not in ("0", "1"):
            raise ApiError.invalid("token", "must be 0 or 1")
        caller = request.caller
        scope = request.params.get("scope", caller.scope)
        if scope not in SCOPES:
            raise ApiError.invalid("scope", "must be all or read")
        if token == "0":
            return {
                "username": caller.username,
                "customer": caller.customer_id,
                "role": caller.role,
            }
        if caller.scope == "read" and scope != "read":
            # Refresh keeps the scope: a read token never becomes one that may hang up.
            raise ApiError.invalid("scope", NARROWER)
        # With a token as credentials this is a refresh: a fresh token for the same person,
        # checked now (enabled, password unchanged, not logged out) like any token request.
        jwt, expires = tokens.issue(caller.username, caller.token_epoch, scope)
        return {
            "auth_token": jwt,
            "auth_token_expiry": tokens.lifetime,
            "auth_token_expires": expires,
        }

    def logout(request: ApiRequest) -> Outcome:
        caller = request.caller
        if not caller.token_id or caller.token_expires is None:
            raise ApiError.invalid("auth_token", NO_TOKEN)
        conn = request.conn
        # Those that would have expired by now need no row any more.
        conn.execute(delete(RevokedToken).where(RevokedToken.expires < int(time.time())))
        # Two logouts of one token at once: both succeed, one row.
        revoke = _insert_once(conn).values(jti=caller.token_id, expires=caller.token_expires)
        conn.execute(revoke)
        return Outcome(204, [("", LOGGED_OUT)])

    api.add(LOGIN, login, [ANY_PRIVILEGE], read=True)
    api.add(LOGOUT, logout, [ANY_PRIVILEGE], read=True)


def _insert_once(conn: Connection) -> Any:
    """INSERT … ON CONFLICT DO NOTHING into revoked_tokens, in the database's dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(RevokedToken).on_conflict_do_nothing()
