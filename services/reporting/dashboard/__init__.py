"""The dashboard: one HTML page and its assets, served by reporting itself (nothing is fetched
from the internet). The page is public; its script reads the token from the URL's #fragment
(never sent to a server) and calls the KPI and alert APIs with it."""
from __future__ import annotations

import mimetypes
from functools import lru_cache
from pathlib import Path

from werkzeug.wrappers import Response

from shared.web.errors import NotFound

HERE = Path(__file__).resolve().parent
ASSETS = HERE / "assets"
# The page may load only its own assets and call only its own origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
          ".png": "image/png", ".woff2": "font/woff2", ".json": "application/json", ".map": "application/json"}


@lru_cache(maxsize=64)
def _read(path: Path) -> bytes:
    return path.read_bytes()


def _headers() -> dict:
    return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache"}


def page() -> Response:
    return Response(_read(HERE / "index.html"), content_type="text/html; charset=utf-8", headers=_headers())


def asset(name: str) -> Response:
    path = ASSETS / name
    if len(name) > 100 or "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
        raise NotFound(f"no dashboard asset {name[:100]}")
    kind = _TYPES.get(path.suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(_read(path), content_type=kind, headers=_headers())
