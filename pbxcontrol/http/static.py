"""Static pages a plugin ships in its package (a wallboard): a fixed set of files, no auth."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import bottle

log = logging.getLogger("pbxcontrol.http")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
# Everything from this host and nothing else: no CDN, no inline script, no framing.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (a cheap 304 by ETag), so an upgrade shows at once.
    "Cache-Control": "no-cache",
}
PREFIX = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class StaticFile:
    content_type: str
    path: Path


def files_of(directory: Path) -> dict[str, StaticFile]:
    """The servable files under `directory`, by their URL path: regular files of a known
    type, no dot-files, no symlinks. The set is fixed here, so a request can only ever name
    one of them (no path is built from the URL)."""
    root = directory.resolve()
    found: dict[str, StaticFile] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_symlink() or not path.is_file() or any(p.startswith(".") for p in rel.parts):
            continue
        content_type = CONTENT_TYPES.get(path.suffix.lower())
        if content_type is not None:
            found[rel.as_posix()] = StaticFile(content_type, path)
    return found


def mount(app: bottle.Bottle, prefix: str, directory: Path) -> None:
    """Serve `directory` at /<prefix>/ (index.html there); /<prefix> redirects to it."""
    if not PREFIX.match(prefix):
        raise ValueError(f"static prefix {prefix!r}: one lowercase path segment expected")
    files = files_of(directory)
    if "index.html" not in files:
        raise ValueError(f"static directory for /{prefix}/ has no index.html")

    def redirect() -> None:
        bottle.redirect(f"/{prefix}/", 301)

    def serve(name: str = "index.html") -> bytes:
        found = files.get(name)
        if found is None:
            raise bottle.HTTPError(404)
        body = found.path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        for key, value in HEADERS.items():
            bottle.response.set_header(key, value)
        bottle.response.set_header("ETag", etag)
        bottle.response.content_type = found.content_type
        if etag in bottle.request.get_header("If-None-Match", ""):
            bottle.response.status = 304
            return b""
        return body

    app.route(f"/{prefix}", "GET", redirect)
    app.route(f"/{prefix}/", "GET", serve)
    app.route(f"/{prefix}/<name:path>", "GET", serve)
    log.debug("serving %d static files at /%s/", len(files), prefix)
