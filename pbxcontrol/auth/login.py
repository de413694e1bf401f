"""`/api/json/user/login/` (Enswitch 4.1+): check credentials; with `token=1`, issue a token."""

from __future__ import annotations

from typing import Any

from pbxcontrol.auth.tokens import TokenSigner
from pbxcontrol.http.api import ANY_PRIVILEGE, ApiRequest, JsonApi
from pbxcontrol.http.envelope import ApiError

PATH = "user/login"


def register(api: JsonApi, tokens: TokenSigner) -> None:
    """A core function, not a plugin's: auth is the core's. Any privilege will do (a panel
    logs in too); what a token may then do is up to each function's own privileges."""

    def login(request: ApiRequest) -> dict[str, Any]:
        token = request.params.get("token", "0")
        if token not in ("0", "1"):
            raise ApiError.invalid("token", "must be 0 or 1")
        caller = request.caller
        if token == "0":
            return {
                "username": caller.username,
                "customer": caller.customer_id,
                "role": caller.role,
            }
        if caller.token_expires is not None:
            # A token cannot renew itself: a stolen one would otherwise live for ever.
            raise ApiError.invalid("token", "a new token needs auth_username and auth_password")
        jwt, expires = tokens.issue(caller.username, caller.token_epoch)
        return {
            "auth_token": jwt,
            "auth_token_expiry": tokens.lifetime,
            "auth_token_expires": expires,
        }

    api.add(PATH, login, [ANY_PRIVILEGE])
