"""The console's own assets (static/): its stylesheet, its script and htmx, vendored and pinned
(static/vendor/VENDORED.md: version, checksum, licence). Nothing comes from a CDN."""
from __future__ import annotations

import gzip
import hashlib
from functools import lru_cache
from pathlib import Path

from werkzeug.wrappers import Response

from services.console.rendering import N_
from services.console.web import PageError

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
          ".png": "image/png", ".ico": "image/x-icon"}


_TEXT = {".js", ".css", ".svg"}  # worth compressing (images are compressed already)


@lru_cache(maxsize=64)
def _read(path: Path) -> tuple[bytes, bytes | None, str]:
    """The file, its gzip (for text), and its ETag: read and compressed once a process."""
    body = path.read_bytes()
    packed = gzip.compress(body, 9, mtime=0) if path.suffix in _TEXT else None
    return body, packed, '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def serve(name: str, request=None) -> Response:
    """An asset by its path under static/ (no dot-files, nothing outside, only the types above);
    gzipped for a browser that takes it (assets hold no secret and echo nothing, so compressing
    them leaks nothing; pages are not compressed: they carry the CSRF token beside what a user
    typed); an ETag so that "no-cache" costs a 304, not the file."""
    parts = name.split("/")
    if len(name) > 200 or any(not p or p.startswith(".") or "\\" in p for p in parts):
        raise PageError(404, N_("There is no such page."))
    path = STATIC.joinpath(*parts)
    kind = _TYPES.get(path.suffix)
    if kind is None or not path.is_file():
        raise PageError(404, N_("There is no such page."))
    # The names of vendored files carry their version: a browser may keep them.
    cache = "public, max-age=31536000, immutable" if parts[0] == "vendor" else "no-cache"
    body, packed, etag = _read(path)
    headers = {"Cache-Control": cache, "ETag": etag, "Vary": "Accept-Encoding"}
    if request is not None and etag in request.headers.get("If-None-Match", ""):
        return Response(status=304, headers=headers)
    if packed is not None and request is not None and _accepts_gzip(request.headers.get("Accept-Encoding", "")):
        return Response(packed, content_type=kind, headers={**headers, "Content-Encoding": "gzip"})
    return Response(body, content_type=kind, headers=headers)
