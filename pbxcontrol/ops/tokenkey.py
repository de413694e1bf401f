"""`pbxcontrol rotate-token-key`: a new token signing key, taken up by every API process
within seconds, without a restart (SPEC §13)."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from pbxcontrol import runtime
from pbxcontrol.auth.keys import rotate_key
from pbxcontrol.auth.tokens import REREAD
from pbxcontrol.config import Config
from pbxcontrol.ops import OpsError


def rotate(config: Config, *, drop_all: bool = False) -> str:
    """Add the key; what was done, for the operator (never a key)."""
    engine, _sessions = runtime.open_database(config, create_if_empty=False)
    try:
        done = rotate_key(engine, config.token_lifetime, drop_all=drop_all)
    except IntegrityError:  # another rotation took the same id at the same moment
        raise OpsError("another rotation ran at the same time: run it again") from None
    finally:
        engine.dispose()
    lines = [f"token signing key {done.new} signs every new token within {REREAD:.0f} s"]
    if done.kept:
        ids = ", ".join(map(str, done.kept))
        lines.append(f"key(s) {ids} still verify the tokens they signed until those expire")
    if done.dropped:
        ids = ", ".join(map(str, done.dropped))
        lines.append(f"key(s) {ids} dropped: the tokens they signed no longer work")
    return "\n".join(lines)
