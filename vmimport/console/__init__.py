"""The web console: static pages shipped in the package (no build step, nothing fetched from
elsewhere) that call the same API as every other client, signing each request with SigV4 in
the browser. The server only hands out these files; it never signs anything for the page."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

STATIC_DIR = Path(__file__).parent / "static"
# Only these files are served: a fixed list needs no path checks against traversal.
FILES = {"": "index.html", "index.html": "index.html", "console.css": "console.css",
         **{name: name for name in ("sigv4.js", "api.js", "dom.js", "blockmap.js", "exports.js",
                                    "detail.js", "upload.js", "console.js")}}
# The page runs only its own scripts and talks only to this server.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "Server": "vmimport",
}


def console_file(name: str) -> Response:
    if name not in FILES:
        return PlainTextResponse("Not Found", 404, headers={"Server": "vmimport"})
    return FileResponse(STATIC_DIR / FILES[name], headers=SECURITY_HEADERS)


def wants_console(request: Request) -> bool:
    """A browser opening the server's root (it asks for HTML; SDKs never do)."""
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


def to_console() -> Response:
    return RedirectResponse("/console/", 302, headers={"Server": "vmimport"})
