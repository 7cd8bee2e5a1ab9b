"""The console's own assets (static/): its stylesheet, its script and htmx, vendored and pinned
(static/vendor/VENDORED.md: version, checksum, licence). Nothing comes from a CDN."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from werkzeug.wrappers import Response

from services.console.rendering import N_
from services.console.web import PageError

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
          ".png": "image/png", ".ico": "image/x-icon"}


@lru_cache(maxsize=64)
def _read(path: Path) -> bytes:
    return path.read_bytes()


def serve(name: str) -> Response:
    """An asset by its path under static/ (no dot-files, nothing outside, only the types above)."""
    parts = name.split("/")
    if len(name) > 200 or any(not p or p.startswith(".") or "\\" in p for p in parts):
        raise PageError(404, N_("There is no such page."))
    path = STATIC.joinpath(*parts)
    kind = _TYPES.get(path.suffix)
    if kind is None or not path.is_file():
        raise PageError(404, N_("There is no such page."))
    # The names of vendored files carry their version: a browser may keep them.
    cache = "public, max-age=31536000, immutable" if parts[0] == "vendor" else "no-cache"
    return Response(_read(path), content_type=kind, headers={"Cache-Control": cache})
