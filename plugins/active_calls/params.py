"""Parameters of calls/active/list: validated whole, every invalid one reported by its name."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

# The choices in the order `pbxcontrol calls --help` and shell completion offer them.
SORTS = (
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
)
SORT_FIELDS = frozenset(SORTS)
DIRECTIONS = {"in": ("in",), "internal": ("internal",), "in_out": ("in", "out"), "out": ("out",)}
MATCHES = ("contains", "exact", "starts", "ends")
MATCH_MODES = frozenset(MATCHES)
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
_UNIX_TIME = re.compile(r"[0-9]{1,11}(\.[0-9]{1,9})?")
# An offset's "+" sent unencoded in a query string arrives as a space ("14:03:00 01:00").
_SPACED_OFFSET = re.compile(r"(.*[0-9]) ([0-9]{2}(:?[0-9]{2})?)")
AT_FORMS = "a Unix time or an ISO 8601 date and time with an offset (Z, +01:00)"


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
    at: float | None = None  # a past moment (Unix time); None = now, the live list


def parse(params: dict[str, str]) -> tuple[ListRequest, list[tuple[str, str]]]:
    """The request and the list of (parameter, message) errors; unknown parameters are ignored
    because Enswitch clients send extras."""
    read = _Reader(params)
    flags = {name: read.flag(name) for name in FLAGS}
    customer = read.customer()
    direction = read.choice(
        "direction", "", {"", *DIRECTIONS}, "must be empty, in, internal, in_out or out"
    )
    sort = read.choice(
        "sort", "start", SORT_FIELDS, f"must be one of {', '.join(sorted(SORT_FIELDS))}"
    )
    texts = read.text_filters()
    types = {name: value for name in TYPE_FILTERS if (value := read.text(name))}
    request = ListRequest(
        customer=customer,
        recursive=flags["recursive"],
        directions=DIRECTIONS.get(direction, ()),
        sort=sort,
        descending=flags["descending"],
        names=flags["names"],
        count=flags["count"],
        callid=read.text("callid"),
        types=types,
        texts=texts,
        phone=read.text("phone"),
        at=read.moment("at"),
    )
    return request, read.errors


def moment(raw: str) -> float:
    """`at` as a Unix time: given as one (seconds, decimals allowed), or as ISO 8601 with an
    offset. ValueError says what is wrong."""
    if _UNIX_TIME.fullmatch(raw):
        return float(raw)
    spaced = _SPACED_OFFSET.fullmatch(raw)
    if spaced and ("T" in raw or raw.count(" ") == 2):
        raw = f"{spaced[1]}+{spaced[2]}"
    try:
        when = datetime.fromisoformat(raw)
        if when.tzinfo is None:
            raise ValueError(f"must have an offset: {AT_FORMS}")
        return when.timestamp()
    except OverflowError as exc:
        raise ValueError(f"must be {AT_FORMS}") from exc
    except ValueError as exc:
        raise ValueError(str(exc) if "offset" in str(exc) else f"must be {AT_FORMS}") from exc


class _Reader:
    """Reads one parameter at a time, collecting an error per invalid one (in reading order,
    which is the order the envelope reports them in)."""

    def __init__(self, params: dict[str, str]):
        self.params = params
        self.errors: list[tuple[str, str]] = []

    def text(self, name: str) -> str:
        value = self.params.get(name, "")
        if len(value) > MAX_LENGTH:
            self.errors.append((name, f"must be at most {MAX_LENGTH} characters"))
            return ""
        if "\x00" in value:  # PostgreSQL refuses NUL in text
            self.errors.append((name, "must not contain NUL characters"))
            return ""
        return value

    def flag(self, name: str) -> bool:
        value = self.params.get(name)
        if value not in (None, "0", "1"):
            self.errors.append((name, "must be 0 or 1"))
        return value == "1"

    def choice(self, name: str, default: str, allowed: Collection[str], message: str) -> str:
        value = self.params.get(name, default)
        if value not in allowed:
            self.errors.append((name, message))
        return value

    def moment(self, name: str) -> float | None:
        raw = self.text(name)
        if not raw:  # unset or empty: now
            return None
        try:
            return moment(raw)
        except ValueError as exc:
            self.errors.append((name, str(exc)))
            return None

    def customer(self) -> int | str | None:
        raw = self.params.get("customer")
        if raw is None:
            return None
        if raw in CUSTOMER_WORDS:
            return raw
        if _CUSTOMER_ID.fullmatch(raw):
            return int(raw)
        self.errors.append(("customer", "must be a customer ID, all, recursive or system"))
        return None

    def text_filters(self) -> tuple[TextFilter, ...]:
        texts = []
        for name, (match_name, columns) in TEXT_FILTERS.items():
            mode = self.params.get(match_name) or "contains"
            if mode not in MATCH_MODES:
                self.errors.append((match_name, "must be contains, exact, starts or ends"))
            value = self.text(name)
            if value:
                texts.append(TextFilter(columns, value, mode))
        return tuple(texts)
