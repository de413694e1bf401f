"""The API function: parameters in, rows out."""

from sqlalchemy import select

from pbxcontrol.plugin import ApiRequest, tables

PRIVILEGES = frozenset({"callshop", "telephone line reports", "user"})


def list_active_calls(request: ApiRequest) -> list[dict]:
    leg = tables.Leg.__table__
    customer = request.caller.customer_id
    with request.sessions() as session:
        rows = session.execute(
            select(*(leg.c[f] for f in tables.LEG_FIELDS))
            .where((leg.c.scustomer == customer) | (leg.c.dcustomer == customer))
            .order_by(leg.c.start, leg.c.uniqueid)
        ).mappings()
        return [dict(r) for r in rows]
