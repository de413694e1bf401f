"""Parameters of calls/active/list: validated whole, every invalid one reported by its name."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SORT_FIELDS = frozenset(
    {
        "cnumber",
        "ctype",
        "direction",
        "dnumber",
        "dtype",
        "machine",
        "peer",
        "scustomer",
        "snumber",
        "stype",
        "uniqueid",
        "start",
    }
)
DIRECTIONS = {"in": ("in",), "internal": ("internal",), "out": ("out",), "in_out": ("in", "out")}
MATCH_MODES = frozenset({"contains", "exact", "starts", "ends"})
CUSTOMER_WORDS = frozenset({"all", "recursive", "system"})
FLAGS = ("recursive", "descending", "names", "count")
TYPE_FILTERS = ("stype", "ctype", "dtype")
#: number filter parameter -> (its match-mode parameter, the leg columns it searches)
TEXT_FILTERS = {
    "snumber": ("smatch", ("snumber",)),
    "cnumber": ("cmatch", ("cnumber",)),
    "dnumber": ("dmatch", ("dnumber",)),
    # Named "callername_number" by Enswitch 4.4; it searches the caller *names* a leg carries,
    # both the one sent to internal and the one sent to external destinations.
    "callername_number": ("callername_match", ("callername_internal", "callername_external")),
}
MAX_LENGTH = 255  # no leg column is longer; anything longer cannot match and is garbage
_CUSTOMER_ID = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class TextFilter:
    columns: tuple[str, ...]
    value: str
    mode: str  # one of MATCH_MODES


@dataclass(frozen=True)
class ListRequest:
    """A valid calls/active/list request, before it is checked against the database."""

    customer: int | str | None = None  # None = own customer; an ID; or a CUSTOMER_WORDS word
    recursive: bool = False
    directions: tuple[str, ...] = ()  # () = every direction
    sort: str = "start"
    descending: bool = False
    names: bool = False
    count: bool = False
    callid: str = ""
    types: dict[str, str] = field(default_factory=dict)  # column -> exact value
    texts: tuple[TextFilter, ...] = ()
    phone: str = ""


def parse(params: dict[str, str]) -> tuple[ListRequest, list[tuple[str, str]]]:
    """The request and the list of (parameter, message) errors; unknown parameters are ignored
    because Enswitch clients send extras."""
    errors: list[tuple[str, str]] = []

    def text(name: str) -> str:
        value = params.get(name, "")
        if len(value) > MAX_LENGTH:
            errors.append((name, f"must be at most {MAX_LENGTH} characters"))
            return ""
        if "\x00" in value:  # PostgreSQL refuses NUL in text
            errors.append((name, "must not contain NUL characters"))
            return ""
        return value

    flags = {}
    for name in FLAGS:
        value = params.get(name)
        if value not in (None, "0", "1"):
            errors.append((name, "must be 0 or 1"))
        flags[name] = value == "1"

    customer: int | str | None = None
    if "customer" in params:
        raw = params["customer"]
        if raw in CUSTOMER_WORDS:
            customer = raw
        elif _CUSTOMER_ID.fullmatch(raw):
            customer = int(raw)
        else:
            errors.append(("customer", "must be a customer ID, all, recursive or system"))

    direction = params.get("direction", "")
    if direction and direction not in DIRECTIONS:
        errors.append(("direction", "must be empty, in, internal, in_out or out"))

    sort = params.get("sort", "start")
    if sort not in SORT_FIELDS:
        errors.append(("sort", f"must be one of {', '.join(sorted(SORT_FIELDS))}"))

    texts = []
    for name, (match_name, columns) in TEXT_FILTERS.items():
        mode = params.get(match_name) or "contains"
        if mode not in MATCH_MODES:
            errors.append((match_name, "must be contains, exact, starts or ends"))
        value = text(name)
        if value:
            texts.append(TextFilter(columns, value, mode))

    types = {name: value for name in TYPE_FILTERS if (value := text(name))}
    request = ListRequest(
        customer=customer,
        recursive=flags["recursive"],
        directions=DIRECTIONS.get(direction, ()),
        sort=sort,
        descending=flags["descending"],
        names=flags["names"],
        count=flags["count"],
        callid=text("callid"),
        types=types,
        texts=tuple(texts),
        phone=text("phone"),
    )
    return request, errors
