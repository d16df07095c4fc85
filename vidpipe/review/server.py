"""The review page's server: the standard library's ThreadingHTTPServer, nothing else.

Security, in the order a request meets it:
- it binds to loopback unless told `--host` with an access token of the user's own;
- the Host header must name the server (a page of another site that rebinds its DNS name
  to 127.0.0.1 is turned away);
- every request needs the access token: in the printed URL once, then in an HttpOnly,
  SameSite=Strict cookie;
- routes are a fixed list matched against the raw path (no decoding, no file system
  lookup): media and crops are addressed by clip id and found through the store's tables,
  so `..`, encoded `..%2f`, absolute paths, links planted in the store and clip ids of other
  stores all end in 404; there are no directory listings;
- every write (POST) needs the CSRF token the page was served with, in a header.
Tokens derive from a secret kept in the review file, so a restarted server still accepts
an open page and prints the same URL.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
from dataclasses import asdict
from functools import lru_cache
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from vidpipe.identities.encoder import IdentitiesError
from vidpipe.identities.gallery import Gallery
from vidpipe.identities.match import UNKNOWN
from vidpipe.review.agreement import agreement
from vidpipe.review.db import LEASE_S, PASSES, ReviewDB, ReviewError, final_labels, item_key, review_db_path
from vidpipe.review.media import Cuts, MediaGone, checked_file, face_jpeg, mime_type, playable
from vidpipe.review.publish import Publisher
from vidpipe.review.queue import Clip, StoreView

log = logging.getLogger("vidpipe.review")
COOKIE = "vidpipe_review"
STATIC = {"/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/app.css": ("app.css", "text/css; charset=utf-8")}
MEDIA = re.compile(r"^/media/([0-9a-f]{16}-[0-9]{4,})$")
CROP = re.compile(r"^/crop/([0-9a-f]{16}-[0-9]{4,})/([0-9])\.jpg$")
RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
CHUNK = 1 << 16
MAX_BODY = 1 << 16
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "media-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'none'",
}


def is_loopback(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback
                   for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
    except (socket.gaierror, ValueError):
        return False


def _derive(secret: str, what: str) -> str:
    return hmac.new(secret.encode(), what.encode(), hashlib.sha256).hexdigest()[:32]


class ReviewApp:
    """Everything a request needs: the store, the review file, the gallery's names, tokens."""

    def __init__(self, out: str | Path, gallery: str | Path, review_db: str | Path | None = None,
                 token: str | None = None) -> None:
        with Gallery.open(gallery) as g:
            names = [p.name for p in g.people()]
        self.view = StoreView(out)
        self.out = self.view.out
        self.db = ReviewDB(review_db or review_db_path(gallery))
        self.names = sorted(set(names) | set(self.view.identities()))
        self.token = token or _derive(self.db.secret, "access")
        self.csrf = _derive(self.db.secret, "csrf:" + self.token)
        self.cuts = Cuts()
        self.publisher = Publisher(self.out, self.db, self.view)
        self.crop = lru_cache(maxsize=512)(self._crop)
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.publisher.close()
        self.cuts.close()
        self.db.close()

    # ---------------------------------------------------------------- payloads

    def media(self, clip: Clip) -> tuple[str, float, float]:
        """(url, start, end) of the clip on the timeline of what the url serves."""
        video = self.view.videos[clip.video_id]
        if playable(video):
            return f"/media/{clip.clip_id}", clip.start_s, clip.end_s
        return f"/media/{clip.clip_id}", 0.0, clip.duration_s

    def clip_payload(self, clip: Clip, pass_: int, subject: str = "") -> dict[str, Any]:
        decisions = self.db.decisions()
        proposed, score, _ = self.view.subject(clip.clip_id, subject)
        src, t0, t1 = self.media(clip)
        refs = []
        for ref in self.view.references(proposed, clip.clip_id, decisions):
            rsrc, r0, r1 = self.media(ref)
            refs.append({"clip_id": ref.clip_id, "src": rsrc, "t0": r0, "t1": r1, "score": ref.score,
                         "video": self.view.videos[ref.video_id].name})
        payload = {
            "clip_id": clip.clip_id, "video": self.view.videos[clip.video_id].name, "video_id": clip.video_id,
            "start_s": clip.start_s, "end_s": clip.end_s, "proposed": proposed, "score": score, "subject": subject,
            "people": self.people_payload(clip.clip_id, pass_, decisions),
            "source": clip.source, "src": src, "t0": t0, "t1": t1, "pass": pass_,
            "crops": [f"/crop/{clip.clip_id}/{k}.jpg" for k in range(len(self.view.faces(clip.clip_id)))],
            "references": refs, "earlier": [],
        }
        if pass_ == 3:  # the arbiter sees both reviews; pass 2 is blind
            payload["earlier"] = [{"pass": d.pass_, "label": d.label, "reviewer": d.reviewer} for d in decisions
                                  if d.item == (clip.clip_id, subject) and d.pass_ in (1, 2)]
        return payload

    def people_payload(self, clip_id: str, pass_: int, decisions) -> list[dict[str, Any]]:
        """Every person proposed in the clip, each with the standing label (None: not yet
        decided; pass 2 is blind, so it shows that pass's own decisions only)."""
        final = final_labels(d for d in decisions if pass_ != 2 or d.pass_ == 2)
        return [{"identity": p.identity, "score": p.score,
                 "label": final[clip_id, p.identity].label if (clip_id, p.identity) in final else None}
                for p in self.view.people.get(clip_id, [])]

    def next_clip(self, pass_: int, tab: str, reviewer: str, video: str | None, identity: str | None) -> dict[str, Any]:
        decisions = self.db.decisions()
        order = self.view.queue(pass_, decisions, reviewer, video, identity)
        keys = {item_key(*i): i for i in order}
        chosen = self.db.lease(list(keys), pass_, tab)
        clip = None if chosen is None else self.clip_payload(self.view.clips[keys[chosen][0]], pass_, keys[chosen][1])
        return {"clip": clip, "remaining": len(order), "lease_s": LEASE_S}

    def decide(self, body: dict[str, Any]) -> dict[str, Any]:
        pass_, tab, subject = _pass(body), str(body.get("tab") or ""), str(body.get("subject") or "")
        clip = self.view.clip(str(body.get("clip_id") or ""))
        if clip is None:
            raise ReviewError("no such clip in this store")
        try:
            proposed, score, _ = self.view.subject(clip.clip_id, subject)
        except IdentitiesError as e:
            raise ReviewError(str(e)) from None
        holder = self.db.holder_of(item_key(clip.clip_id, subject), pass_)
        if holder is not None and holder != tab:
            raise ReviewError(f"clip {clip.clip_id} is being reviewed in another tab")
        decision = self.db.decide(clip.clip_id, pass_, str(body.get("verdict") or ""), str(body.get("reviewer") or ""),
                                  proposed, score, body.get("identity"), subject)
        self.publisher.mark()
        result = self.next_clip(pass_, tab, str(body.get("reviewer") or ""), body.get("video") or None,
                                body.get("identity_filter") or None)
        return {"decided": _decision_json(decision), **result}

    def state(self, pass_: int) -> dict[str, Any]:
        decisions = self.db.decisions()
        return {
            "names": self.names,
            "identities": [*self.view.identities(), UNKNOWN],
            "videos": [{"video_id": v, "name": n} for v, n in self.view.video_choices()],
            "recent": [_decision_json(d) for d in self.db.recent(15, pass_)],
            "decided": {p: sum(d.pass_ == p for d in decisions) for p in PASSES},
            "clips": len(self.view.clips),
            "agreement": [{**asdict(a), "rate": a.rate} for a in agreement(decisions)],
        }

    def _crop(self, clip_id: str, k: int) -> bytes | None:
        clip = self.view.clip(clip_id)
        faces = self.view.faces(clip_id) if clip else []
        if k >= len(faces):
            return None
        return face_jpeg(self.view.videos[clip.video_id], faces[k])


def _pass(body: dict[str, Any]) -> int:
    try:
        value = int(body.get("pass", 1))
    except (TypeError, ValueError):
        value = 0
    if value not in PASSES:
        raise ReviewError(f"pass must be one of {PASSES}")
    return value


def _decision_json(d) -> dict[str, Any]:
    return {"clip_id": d.clip_id, "subject": d.subject, "pass": d.pass_, "verdict": d.verdict, "label": d.label, "proposed": d.proposed,
            "reviewer": d.reviewer, "decided_at": d.decided_at}


class _Handler(BaseHTTPRequestHandler):
    server: "ReviewServer"
    protocol_version = "HTTP/1.1"
    server_version = "vidpipe-review"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    @property
    def app(self) -> ReviewApp:
        return self.server.app

    # ---------------------------------------------------------------- plumbing

    def _send(self, status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in {**SECURITY_HEADERS, "Content-Type": content_type, "Content-Length": str(len(body)),
                     "Cache-Control": "no-store", **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _not_found(self) -> None:
        self._send(HTTPStatus.NOT_FOUND, b"not found\n")

    def _host_ok(self) -> bool:
        return (self.headers.get("Host") or "").lower() in self.server.hosts

    def _authorised(self) -> bool:
        cookie = SimpleCookie(self.headers.get("Cookie") or "")
        value = cookie[COOKIE].value if COOKIE in cookie else ""
        return hmac.compare_digest(value, self.app.token)

    def _guard(self) -> tuple[str, dict[str, list[str]]] | None:
        """(path, query) of an allowed request, else None (the answer already sent)."""
        url = urlsplit(self.path)
        if not self._host_ok():
            self._not_found()
            return None
        query = parse_qs(url.query)
        if url.path == "/" and self.command == "GET" and "token" in query:
            if hmac.compare_digest(query["token"][0], self.app.token):
                self._send(HTTPStatus.SEE_OTHER, headers={
                    "Location": "/", "Set-Cookie": f"{COOKIE}={self.app.token}; HttpOnly; SameSite=Strict; Path=/"})
            else:
                self._send(HTTPStatus.FORBIDDEN, b"wrong access token\n")
            return None
        if not self._authorised():
            self._send(HTTPStatus.FORBIDDEN, b"open the URL that `vidpipe review` printed (it carries the access token)\n")
            return None
        return url.path, query

    # ---------------------------------------------------------------- GET

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        guarded = self._guard()
        if guarded is None:
            return
        path, query = guarded
        try:
            if path == "/":
                self._send(200, self.server.page(self.app.csrf), "text/html; charset=utf-8")
            elif path in STATIC:
                name, mime = STATIC[path]
                self._send(200, self.server.static(name), mime)
            elif path == "/api/state":
                self._json(self.app.state(_pass({"pass": (query.get("pass") or ["1"])[0]})))
            elif m := MEDIA.match(path):
                self._media(m.group(1))
            elif m := CROP.match(path):
                data = self.app.crop(m.group(1), int(m.group(2)))
                if data is None:
                    return self._not_found()
                self._send(200, data, "image/jpeg", {"Cache-Control": "private, max-age=3600"})
            else:
                self._not_found()
        except (MediaGone, ReviewError) as e:
            log.warning("%s: %s", path, e)
            self._not_found()

    def _media(self, clip_id: str) -> None:
        clip = self.app.view.clip(clip_id)
        if clip is None:
            return self._not_found()
        video = self.app.view.videos[clip.video_id]
        path = checked_file(video) if playable(video) else self.app.cuts.get(video, clip)
        size = path.stat().st_size
        start, end, status = 0, size - 1, HTTPStatus.OK
        m = RANGE.match((self.headers.get("Range") or "").strip())
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start, end = int(m.group(1)), min(int(m.group(2) or size - 1), size - 1)
            else:
                start = max(0, size - int(m.group(2)))
            if start > end or start >= size:
                return self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, headers={"Content-Range": f"bytes */{size}"})
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        headers = {**SECURITY_HEADERS, "Content-Type": mime_type(path), "Accept-Ranges": "bytes",
                   "Content-Length": str(end - start + 1), "Cache-Control": "private, max-age=3600"}
        if status == HTTPStatus.PARTIAL_CONTENT:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            with open(path, "rb") as f:
                f.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the player moved on (a seek): normal

    # ---------------------------------------------------------------- POST

    def do_POST(self) -> None:  # noqa: N802
        guarded = self._guard()
        if guarded is None:
            return
        path, _ = guarded
        if not hmac.compare_digest(self.headers.get("X-CSRF-Token") or "", self.app.csrf):
            return self._send(HTTPStatus.FORBIDDEN, b"missing or wrong CSRF token: reload the page\n")
        routes: dict[str, Callable[[dict[str, Any]], Any]] = {
            "/api/next": lambda b: self.app.next_clip(_pass(b), str(b.get("tab") or ""), str(b.get("reviewer") or ""),
                                                      b.get("video") or None, b.get("identity_filter") or None),
            "/api/decide": self.app.decide,
            "/api/renew": lambda b: {"ok": self.app.db.renew(item_key(str(b.get("clip_id") or ""), str(b.get("subject") or "")),
                                                             _pass(b), str(b.get("tab") or ""))},
            "/api/release": lambda b: self.app.db.release(str(b.get("tab") or "")) or {"ok": True},
        }
        if path not in routes:
            return self._not_found()
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY or "application/json" not in (self.headers.get("Content-Type") or ""):
                raise ValueError("a JSON body is needed")
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict) or not str(body.get("tab") or ""):
                raise ValueError("the body must be a JSON object with a tab id")
        except ValueError as e:
            return self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)
        try:
            self._json(routes[path](body))
        except ReviewError as e:
            self._json({"error": str(e)}, HTTPStatus.CONFLICT)

    def do_PUT(self) -> None:  # noqa: N802
        self._not_found()

    do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_PUT  # noqa: N815


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog. socketserver's 5 drops the connections a page (media ranges,
    # crops, API calls of several tabs) opens at once beyond it: their SYNs wait out
    # retransmission timeouts. The kernel caps it at net.core.somaxconn.
    request_queue_size = 1024

    def __init__(self, app: ReviewApp, host: str, port: int) -> None:
        self.app = app
        super().__init__((host, port), _Handler)
        self.port = self.server_address[1]
        names = {host.lower(), "localhost", "127.0.0.1", "[::1]"} if is_loopback(host) else {host.lower()}
        self.hosts = {f"{n}:{self.port}" for n in names}
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/?token={app.token}"
        self._files = {n: (resources.files("vidpipe.review") / "static" / n).read_bytes()
                       for n in ("index.html", "app.js", "app.css")}

    def handle_error(self, request, client_address) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)) or self.app.closed:
            return  # a browser dropping a media connection it no longer needs, or a request cut by the shutdown
        super().handle_error(request, client_address)

    def page(self, csrf: str) -> bytes:
        return self._files["index.html"].replace(b"{{csrf}}", csrf.encode())

    def static(self, name: str) -> bytes:
        return self._files[name]


def check_bind(host: str, token: str | None) -> None:
    """Loopback, or an address the user chose with an access token of their own."""
    if not is_loopback(host) and not (token and len(token) >= 16):
        raise ReviewError(f"refusing to serve on {host}, which is not a loopback address, without an access token "
                          "of at least 16 characters: give --token (anyone who can reach the port and knows it can "
                          "review and read the store's videos)")


def make_server(out: str | Path, gallery: str | Path, host: str = "127.0.0.1", port: int = 0,
                token: str | None = None, review_db: str | Path | None = None) -> ReviewServer:
    """A review server bound and ready (`serve_forever` to run it, `close` to stop)."""
    check_bind(host, token)
    app = ReviewApp(out, gallery, review_db, token)
    try:
        return ReviewServer(app, host, port)
    except OSError as e:
        app.close()
        raise ReviewError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def close_server(server: ReviewServer) -> None:
    server.shutdown()
    server.server_close()
    server.app.close()


def serve_review(out: str | Path, gallery: str | Path, host: str = "127.0.0.1", port: int = 8765,
                 token: str | None = None, review_db: str | Path | None = None,
                 on_ready: Callable[[ReviewServer], None] | None = None) -> None:
    """Serve the review page until interrupted (Ctrl+C); every decision is already on disk."""
    server = make_server(out, gallery, host, port, token, review_db)
    if on_ready is not None:
        on_ready(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        close_server(server)

