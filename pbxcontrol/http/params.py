"""Request parameters: query string and form body, `;` or `&` separated, decoded strictly."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from pbxcontrol.http.envelope import ApiError

MAX_PARAMS = 200


def parse(*sources: bytes | str) -> dict[str, str]:
    """Merge query and form parameters. A name given twice with different values is a 400."""
    params: dict[str, str] = {}
    bad: list[tuple[str, str]] = []
    count = 0
    for source in sources:
        raw = source.encode("latin-1") if isinstance(source, str) else source
        for part in raw.replace(b";", b"&").split(b"&"):
            if not part:
                continue
            count += 1
            if count > MAX_PARAMS:
                raise ApiError.invalid("", f"more than {MAX_PARAMS} parameters")
            name_raw, _, value_raw = part.partition(b"=")
            try:
                name = _decode(name_raw)
                value = _decode(value_raw)
            except UnicodeDecodeError:
                bad.append((_safe_name(name_raw), "is not valid UTF-8"))
                continue
            if name in params and params[name] != value:
                bad.append((name, "is given more than once with different values"))
                continue
            params[name] = value
    if bad:
        raise ApiError(400, bad)
    return params


def _decode(raw: bytes) -> str:
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")


def _safe_name(raw: bytes) -> str:
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", "replace")[:64]
