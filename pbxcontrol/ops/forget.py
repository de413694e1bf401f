"""`pbxcontrol forget-machine N`: end at once the live legs of a machine nobody records (SPEC §12).

What `[recorder] forget_seconds` does by itself after an hour, for an operator who knows the
machine is gone (decommissioned, its host lost): the legs are moved to the history, ended at
the machine's last lease renewal, and every stream removes them. Refused while a recorder
holds the machine (its lease renewed within the lease's expiry): stop that recorder first. A
recorder that takes the machine later reconciles with Asterisk: legs Asterisk still has come
back live.
"""

from __future__ import annotations

import time

from pbxcontrol import runtime
from pbxcontrol.config import Config
from pbxcontrol.db import unrecorded
from pbxcontrol.ops import OpsError
from pbxcontrol.recorder.lease import EXPIRY_SHARE


def forget_machine(config: Config, machine: int) -> str:
    """End the machine's live legs; what was done, for the operator. OpsError (exit status 2)
    naming the holder while a recorder holds it."""
    expiry = config.takeover_seconds * EXPIRY_SHARE  # a standby would take it after this
    engine, _sessions = runtime.open_database(config, create_if_empty=False)
    try:
        with engine.begin() as conn:
            ended = unrecorded.forget(conn, machine, expiry, released=True)
            if ended is None:
                lease = next((x for x in unrecorded.leases(conn) if x.machine == machine), None)
                if lease is None:
                    raise OpsError(f"machine {machine} is not in the database")
                raise OpsError(
                    f"machine {machine} is recorded by {lease.holder} (its lease renewed "
                    f"{max(lease.age, 0.0):.1f} s ago): stop that recorder first"
                )
            since = next((s for m, s in unrecorded.unrecorded(conn) if m == machine), 0.0)
    finally:
        engine.dispose()
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if since else "now"
    return (
        f"machine {machine}: ended {ended} live legs at its last lease renewal ({at}); a "
        "recorder that takes the machine reconciles with Asterisk"
    )
