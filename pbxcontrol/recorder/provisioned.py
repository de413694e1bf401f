"""What the recorder classifies by: lines, peers, numbers and customers, cached in memory."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pbxcontrol.db.models import Customer, Line, Number, Peer


@dataclass(frozen=True, slots=True)
class LineInfo:
    customer: int
    number: str
    callerid_internal: str
    callerid_external: str
    callername_internal: str
    callername_external: str


@dataclass(frozen=True, slots=True)
class PeerInfo:
    id: int
    ingroup: int
    outgroup: int
    billing_peer: int


@dataclass(frozen=True)
class Provisioned:
    lines: dict[str, LineInfo]
    peers: dict[str, PeerInfo]
    numbers: dict[str, int]
    max_calls: dict[int, int]

    @classmethod
    def empty(cls) -> Provisioned:
        return cls({}, {}, {}, {})

    @classmethod
    def load(cls, session: Session) -> Provisioned:
        return cls(
            lines={
                r.endpoint: LineInfo(
                    r.customer_id,
                    r.number,
                    r.callerid_internal,
                    r.callerid_external,
                    r.callername_internal,
                    r.callername_external,
                )
                for r in session.execute(select(*Line.__table__.c))
            },
            peers={
                r.endpoint: PeerInfo(r.id, r.ingroup, r.outgroup, r.billing_peer or r.id)
                for r in session.execute(select(*Peer.__table__.c))
            },
            numbers=dict(session.execute(select(Number.number, Number.customer_id)).all()),
            max_calls={
                cid: m for cid, m in session.execute(select(Customer.id, Customer.max_calls)) if m
            },
        )


class ProvisionedCache:
    """Reloaded every `ttl` seconds: provisioning runs in another process."""

    def __init__(self, sessions: sessionmaker[Session], ttl: float = 10.0):
        self._sessions = sessions
        self._ttl = ttl
        self._value = Provisioned.empty()
        self._loaded = float("-inf")

    def get(self) -> Provisioned:
        now = time.monotonic()
        if now - self._loaded >= self._ttl:
            with self._sessions() as session:
                self._value = Provisioned.load(session)
            self._loaded = now
        return self._value
