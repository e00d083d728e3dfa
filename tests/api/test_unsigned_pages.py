"""What answers without a signature: /health, the console's files, and a browser's visit to
/ (sent to the console) — while API clients and S3 requests on the same paths are unchanged."""

from __future__ import annotations

import json
from email.message import Message
import urllib.error
import urllib.request


def _get(url: str, **headers) -> tuple[int, Message, bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_health_says_the_database_is_reachable_and_nothing_more(server):
    status, headers, body = _get(server.endpoint + "/health")
    assert status == 200 and headers["Content-Type"] == "application/json"
    document = json.loads(body)
    assert document.keys() == {"status", "version", "database"}
    assert document["status"] == "ok" and document["database"] == "reachable"
    assert str(server.data_dir) not in body.decode()


def test_a_browser_at_the_root_is_sent_to_the_console(server):
    status, headers, _ = _get(server.endpoint + "/", Accept="text/html,application/xhtml+xml")
    assert status == 302 and headers["Location"] == "/console/"
    # An API client (no HTML asked for) still gets the API's answer: a refusal, unsigned.
    status, _, body = _get(server.endpoint + "/")
    assert status in (400, 401) and b"AuthFailure" in body


def test_console_files_are_served_with_a_strict_policy(server):
    status, headers, body = _get(server.endpoint + "/console/")
    assert status == 200 and b"<html" in body.lower()
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name in ("console.js", "sigv4.js", "api.js", "upload.js", "console.css"):
        assert _get(f"{server.endpoint}/console/{name}")[0] == 200, name
    assert _get(server.endpoint + "/console/../pyproject.toml")[0] == 404
    assert _get(server.endpoint + "/console/nothing.js")[0] == 404


def test_a_bucket_named_console_is_still_s3s(server):
    s3 = server.client("s3")
    s3.create_bucket(Bucket="console")
    s3.put_object(Bucket="console", Key="index.html", Body=b"mine")
    assert s3.get_object(Bucket="console", Key="index.html")["Body"].read() == b"mine"
    s3.delete_object(Bucket="console", Key="index.html")
    s3.delete_bucket(Bucket="console")


def test_underscore_health_and_readiness(server):
    status, _, body = _get(server.endpoint + "/_health")
    assert status == 200 and json.loads(body)["database"] == "reachable"
    status, headers, body = _get(server.endpoint + "/_ready")
    document = json.loads(body)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert document == {"status": "ready", "version": document["version"],
                        "database": "reachable", "block_store": "reachable"}


def test_readiness_fails_when_the_block_store_is_gone(tmp_path):
    import shutil

    from ..helpers import Server
    srv = Server(tmp_path / "data", workers=0).start()
    try:
        assert _get(srv.endpoint + "/_ready")[0] == 200
        shutil.rmtree(srv.data_dir / "blocks")
        (srv.data_dir / "blocks").write_text("not a directory")  # reads now fail
        status, _, body = _get(srv.endpoint + "/_ready")
        assert status == 503 and json.loads(body)["block_store"] == "unreachable"
        assert _get(srv.endpoint + "/_health")[0] == 200  # alive, only not ready
    finally:
        srv.stop()
