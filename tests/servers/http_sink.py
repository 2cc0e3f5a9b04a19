#!/usr/bin/python3
"""http_sink: an HTTP/1.1 server for usher's integration tests (Slack webhooks, CRM APIs).

Listens on 127.0.0.1 only; keep-alive; every answer has Content-Length. Each request that is
answered (any status) or deliberately dropped is appended as one JSON line to the --log file
*before* its response is sent, so a client that got an answer always finds its line there.
Faults (status codes, Retry-After, delays, dropped connections, a deterministic failure
fraction) are set at runtime through /_control/ (never logged); see tests/servers/README.md.

Only the Python standard library is used.
"""

import argparse
import base64
import datetime
import json
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HUBSPOT_UPSERT_SUFFIX = "/crm/v3/objects/contacts/batch/upsert"
MODE_KEYS = {"status", "retry_after", "delay_ms", "drop", "count", "fail_ratio", "seed", "paths",
             "body", "content_type"}


def write_atomic(path, data):
    """Guarantee: PATH either does not exist or holds all of DATA (tmp file + rename)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def is_slack_path(path):
    """Slack-style incoming-webhook path: /services/T../B../X.. (as on hooks.slack.com) or
    anything with a "slack" path segment prefix, e.g. /slack, /slack/T1/B2/x, /hooks/slack-ops."""
    return path.startswith("/services/") or any(
        seg.lower().startswith("slack") for seg in path.split("/"))


def iso_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


class Sink:
    """Request log, fault mode, statistics and fake-CRM ids, shared by all handler threads.

    All methods hold the lock only for in-memory work and one write(2) to the log; never while
    sleeping or doing socket I/O.
    """

    def __init__(self, log_path):
        self.lock = threading.Lock()
        self.log_path = log_path
        self.seq = 0
        if log_path and os.path.exists(log_path):  # continue numbering across restarts
            with open(log_path, "rb") as f:
                for line in f:
                    try:
                        self.seq = max(self.seq, int(json.loads(line)["seq"]))
                    except (ValueError, KeyError, TypeError):
                        pass
        self.log_fd = (os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                       if log_path else None)
        self._reset_locked()

    def _reset_locked(self):
        self.mode = None          # validated mode dict, or None = normal answers
        self.fault_left = None    # faults still to inject (None = unlimited)
        self.rng = None
        self.by_path = {}         # path -> {status -> count}
        self.by_status = {}
        self.total = 0
        self.contacts = {}        # (idProperty, id) -> HubSpot-like object id
        self.next_object_id = 1001

    def reset(self, truncate_log=False):
        with self.lock:
            self._reset_locked()
            if truncate_log and self.log_fd is not None:
                os.ftruncate(self.log_fd, 0)

    def set_mode(self, m):
        """Validate and install a mode (replacing the previous one). Raises ValueError."""
        if not isinstance(m, dict):
            raise ValueError("mode must be a JSON object")
        unknown = set(m) - MODE_KEYS
        if unknown:
            raise ValueError(f"unknown mode keys {sorted(unknown)}; known: {sorted(MODE_KEYS)}")
        status = m.get("status")
        if status is not None and not (isinstance(status, int) and 100 <= status <= 599):
            raise ValueError("status must be an integer 100..599 or null")
        count = m.get("count")
        if count is not None and (not isinstance(count, int) or count < 0):
            raise ValueError("count must be a non-negative integer or null")
        ratio = m.get("fail_ratio", 1.0)
        ratio = 1.0 if ratio is None else float(ratio)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError("fail_ratio must be within 0..1")
        delay = m.get("delay_ms") or 0
        if not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError("delay_ms must be a non-negative number")
        paths = m.get("paths")
        if paths is not None and (not isinstance(paths, list)
                                  or not all(isinstance(p, str) for p in paths)):
            raise ValueError("paths must be a list of strings or null")
        mode = {"status": status, "retry_after": m.get("retry_after"), "delay_ms": delay,
                "drop": bool(m.get("drop", False)), "count": count, "fail_ratio": ratio,
                "seed": m.get("seed", 1), "paths": paths, "body": m.get("body"),
                "content_type": m.get("content_type")}
        with self.lock:
            self.mode = mode
            self.fault_left = count
            self.rng = random.Random(mode["seed"])

    def take_fault(self, path):
        """The mode to apply to this request, or None for a normal answer.

        A request matches when paths is null or one entry equals its path or is a path prefix
        of it ("/slack" matches "/slack/T1/B2"). A matching request is selected when the seeded
        generator's next draw is below fail_ratio (one draw per matching request while faults
        remain); each selected request consumes one of count.
        """
        with self.lock:
            m = self.mode
            if m is None or self.fault_left == 0:
                return None
            if m["paths"] is not None and not any(
                    path == p or path.startswith(p.rstrip("/") + "/") for p in m["paths"]):
                return None
            if m["fail_ratio"] < 1.0 and self.rng.random() >= m["fail_ratio"]:
                return None
            if self.fault_left is not None:
                self.fault_left -= 1
            return m

    def record(self, entry):
        """Assign the next seq, append ENTRY as one line (one write(2)), count it."""
        with self.lock:
            self.seq += 1
            entry["seq"] = self.seq
            if self.log_fd is not None:
                line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
                os.write(self.log_fd, line.encode("utf-8", "replace"))
            st = str(entry["status"])
            self.total += 1
            self.by_status[st] = self.by_status.get(st, 0) + 1
            per = self.by_path.setdefault(entry["path"], {})
            per[st] = per.get(st, 0) + 1

    def contact_id(self, id_property, ident):
        """Stable object id per (idProperty, id); second value True if it was new."""
        with self.lock:
            key = (id_property, ident)
            if key in self.contacts:
                return self.contacts[key], False
            self.contacts[key] = str(self.next_object_id)
            self.next_object_id += 1
            return self.contacts[key], True

    def stats(self):
        with self.lock:
            return {"total": self.total, "by_status": dict(self.by_status),
                    "by_path": {p: dict(c) for p, c in self.by_path.items()},
                    "mode": self.mode, "fault_left": self.fault_left, "last_seq": self.seq,
                    "contacts": len(self.contacts)}


class BodyTooLarge(Exception):
    pass


def make_handler(sink, max_body, idle_timeout):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = idle_timeout        # idle keep-alive connections are closed after this
        # Headers and body go out in two writes: with Nagle on, the body waits for the client's
        # delayed ACK of the headers, which added ~40 ms to every keep-alive request.
        disable_nagle_algorithm = True
        server_version = "usher-http-sink/1"

        def version_string(self):
            return self.server_version

        def log_message(self, fmt, *args):  # the JSON log is the record; keep stderr quiet
            pass

        # -- plumbing -------------------------------------------------------------------

        def read_body(self):
            """The whole request body (Content-Length or chunked). Raises BodyTooLarge."""
            te = (self.headers.get("Transfer-Encoding") or "").lower()
            if "chunked" in te:
                out = bytearray()
                while True:
                    size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return bytes(out)
                    if len(out) + size > max_body:
                        raise BodyTooLarge()
                    out += self.rfile.read(size)
                    self.rfile.readline(8)  # CRLF after the chunk
            n = int(self.headers.get("Content-Length") or 0)
            if n > max_body:
                raise BodyTooLarge()
            out = bytearray()
            while len(out) < n:
                chunk = self.rfile.read(min(1 << 20, n - len(out)))
                if not chunk:
                    raise ConnectionError("client closed during body")
                out += chunk
            return bytes(out)

        def send(self, status, body, ctype, extra=None, head=False):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, str(v))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def send_json(self, status, obj, extra=None, head=False):
            self.send(status, (json.dumps(obj) + "\n").encode(), "application/json", extra, head)

        # -- dispatch -------------------------------------------------------------------

        def handle_any(self, head=False):
            try:
                body = self.read_body()
            except BodyTooLarge:
                self.close_connection = True
                self.send_json(413, {"ok": False, "error": f"body larger than {max_body} bytes"})
                return
            except (ConnectionError, ValueError):
                self.close_connection = True
                return
            url = urlsplit(self.path)
            path = url.path
            if path.startswith("/_control/"):
                self.control(path, body)
                return
            fault = sink.take_fault(path)
            if fault and fault["delay_ms"]:
                time.sleep(fault["delay_ms"] / 1000.0)
            entry = {"seq": None, "path": path, "query": url.query, "method": self.command,
                     "headers": self.header_dict(), "ts": time.time()}
            try:
                entry["body"] = body.decode("utf-8")
            except UnicodeDecodeError:
                entry["body"] = body.decode("utf-8", "replace")
                entry["body_base64"] = base64.b64encode(body).decode()
            if fault and fault["drop"]:
                entry.update(status=0, dropped=True)
                sink.record(entry)
                self.close_connection = True  # finish() closes the socket; nothing is sent
                return
            if fault and fault["status"] is not None:
                status, payload, ctype, extra = self.fault_answer(fault, path)
            else:
                status, payload, ctype, extra = self.default_answer(path, body)
            entry["status"] = status
            sink.record(entry)
            self.send(status, payload, ctype, extra, head)

        def header_dict(self):
            h = {}
            for k, v in self.headers.items():
                k = k.lower()
                h[k] = f"{h[k]}, {v}" if k in h else v
            return h

        def fault_answer(self, fault, path):
            status = fault["status"]
            extra = {}
            if fault["retry_after"] is not None:
                extra["Retry-After"] = fault["retry_after"]
            if fault["body"] is not None:
                return (status, str(fault["body"]).encode(),
                        fault["content_type"] or "text/plain; charset=utf-8", extra)
            if is_slack_path(path) and status >= 400:
                text = {429: "rate_limited", 404: "no_service", 403: "action_prohibited",
                        400: "invalid_payload"}.get(status, "injected_failure")
                return status, text.encode(), "text/plain; charset=utf-8", extra
            obj = {"ok": 200 <= status < 300, "status": status, "injected": True}
            return status, (json.dumps(obj) + "\n").encode(), "application/json", extra

        def default_answer(self, path, body):
            if path.endswith(HUBSPOT_UPSERT_SUFFIX) and self.command == "POST":
                return self.hubspot_upsert(body)
            if is_slack_path(path):
                return 200, b"ok", "text/plain; charset=utf-8", {}
            return 200, b'{"ok":true}\n', "application/json", {}

        def hubspot_upsert(self, body):
            """HubSpot CRM v3 batch upsert: 200 COMPLETE with one result per input, stable ids
            per (idProperty, id) ("new" true the first time); 400 VALIDATION_ERROR if the body
            is not {"inputs":[{"id":..,"properties":{..}},..]}."""
            try:
                req = json.loads(body)
                inputs = req["inputs"]
                if not isinstance(inputs, list) or not inputs:
                    raise ValueError("inputs must be a non-empty list")
                for i in inputs:
                    if not isinstance(i, dict) or not isinstance(i.get("properties", {}), dict) \
                            or "id" not in i:
                        raise ValueError("each input needs id and properties")
            except (ValueError, KeyError, TypeError) as e:
                err = {"status": "error", "message": f"Invalid input JSON: {e}",
                       "category": "VALIDATION_ERROR", "correlationId": "00000000-sink"}
                return 400, (json.dumps(err) + "\n").encode(), "application/json", {}
            started = iso_now()
            results = []
            for i in inputs:
                idp = i.get("idProperty", "email")
                oid, new = sink.contact_id(idp, str(i["id"]))
                props = {k: (None if v is None else str(v))
                         for k, v in i.get("properties", {}).items()}
                props.update({idp: str(i["id"]), "hs_object_id": oid})
                results.append({"id": oid, "properties": props, "createdAt": started,
                                "updatedAt": started, "archived": False, "new": new})
            resp = {"status": "COMPLETE", "results": results, "startedAt": started,
                    "completedAt": iso_now()}
            return 200, (json.dumps(resp) + "\n").encode(), "application/json", {}

        def control(self, path, body):
            if path == "/_control/stats" and self.command == "GET":
                self.send_json(200, sink.stats())
            elif path == "/_control/health" and self.command == "GET":
                self.send_json(200, {"ok": True})
            elif path == "/_control/mode" and self.command == "POST":
                try:
                    sink.set_mode(json.loads(body or b"{}"))
                except (ValueError, TypeError) as e:
                    self.send_json(400, {"ok": False, "error": str(e)})
                    return
                self.send_json(200, sink.stats())
            elif path == "/_control/reset" and self.command == "POST":
                try:
                    opts = json.loads(body) if body.strip() else {}
                except ValueError as e:
                    self.send_json(400, {"ok": False, "error": str(e)})
                    return
                sink.reset(truncate_log=bool(isinstance(opts, dict) and opts.get("truncate_log")))
                self.send_json(200, sink.stats())
            else:
                self.send_json(404, {"ok": False, "error": f"unknown control {self.command} {path}"})

        def do_GET(self):
            self.handle_any()

        def do_HEAD(self):
            self.handle_any(head=True)

        do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many concurrent connects from usher's worker pool


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="HTTP/1.1 sink for tests: logs every request as a JSON line; faults are "
                    "set at runtime via POST /_control/mode (see tests/servers/README.md).")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = pick free)")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--log", help="JSON-lines request log (appended; seq continues)")
    p.add_argument("--max-body", type=int, default=64 * 1024 * 1024,
                   help="larger request bodies get 413 (default 64 MiB)")
    p.add_argument("--idle-timeout", type=float, default=120.0,
                   help="close a connection idle for this many seconds (default 120)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sink = Sink(args.log)
    srv = Server(("127.0.0.1", args.port), make_handler(sink, args.max_body, args.idle_timeout))
    port = srv.server_address[1]
    if args.port_file:
        write_atomic(args.port_file, f"{port}\n".encode())
    print(f"http_sink: listening on 127.0.0.1:{port}, log {args.log}", file=sys.stderr, flush=True)
    # SIGTERM -> orderly exit (serve_forever returns; open keep-alive threads are daemons).
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
