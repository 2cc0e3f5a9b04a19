#!/usr/bin/python3
"""sink_load: measures the CPU the test sinks spend per request (not a test; a yardstick).

Runs CLIENTS concurrent clients (spread over PROCS processes of threads) against a running
smtp_sink.py (smtplib, one connection per client, many messages per connection, like libcurl's
connection cache) or http_sink.py (http.client keep-alive, alternating a Slack post and a
HubSpot upsert), optionally after setting a delay fault through the sink's control API, and
prints requests/s and the sink's CPU time per request, read from /proc/PID/stat.

  sink_load.py smtp --port P --control-url URL --pid PID [--clients 64 --requests 5000]
  sink_load.py http --port P --pid PID [--clients 64 --requests 10000] [--delay-ms 20]
"""

import argparse
import http.client
import json
import multiprocessing
import os
import smtplib
import threading
import time
import urllib.request

TEXT = ("Hello {n},\n\nwelcome to Example. Your account is ready; sign in at "
        "https://app.example.org/login to get started.\n\n-- \nThe Example team\n")


def mail(n):
    """A multipart/alternative message of about 1.5 KB, shaped like usher's welcome e-mail."""
    body = TEXT.format(n=n).replace("\n", "\r\n")
    html = ("<html><body><p>Hello " + str(n) + ",</p><p>welcome to Example.</p>" * 8
            + "</body></html>\r\n")
    return (f"Date: Mon, 01 Jan 2026 00:00:00 +0000\r\nFrom: Example <noreply@example.org>\r\n"
            f"To: <user{n}@example.org>\r\nSubject: =?UTF-8?Q?Welcome_=C3=A0_Example?=\r\n"
            f"Message-ID: <signup.{n}@usher.invalid>\r\nMime-Version: 1.0\r\n"
            f"Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n"
            f"--b1\r\nContent-Type: text/plain; charset=UTF-8\r\n"
            f"Content-Transfer-Encoding: quoted-printable\r\n\r\n{body}\r\n"
            f"--b1\r\nContent-Type: text/html; charset=UTF-8\r\n"
            f"Content-Transfer-Encoding: quoted-printable\r\n\r\n{html}\r\n--b1--\r\n").encode()


def smtp_client(port, count, base, errors):
    """Sends COUNT messages over one connection (reconnecting after an error)."""
    s = None
    for i in range(count):
        try:
            if s is None:
                s = smtplib.SMTP("127.0.0.1", port, timeout=30)
                s.ehlo("load.test")
            n = base + i
            s.sendmail("noreply@example.org", [f"user{n}@example.org"], mail(n))
        except Exception as e:  # count it, carry on with a fresh connection
            errors.append(repr(e))
            s = None
    if s is not None:
        s.quit()


def http_client(port, count, base, errors):
    """Sends COUNT requests over one keep-alive connection (Slack post / HubSpot upsert)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(count):
        n = base + i
        if i % 2:
            path = "/crm/v3/objects/contacts/batch/upsert"
            body = json.dumps({"inputs": [{"idProperty": "email", "id": f"user{n}@example.org",
                                           "properties": {"firstname": f"U{n}"}}]})
        else:
            path, body = "/slack/T1/B2/x", json.dumps({"text": f"New signup: user{n}"})
        try:
            c.request("POST", path, body, {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            if r.status != 200:
                errors.append(f"status {r.status}")
        except Exception as e:
            errors.append(repr(e))
            c.close()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.close()


def proc_main(kind, port, threads, per_client, base, q):
    """One load process: THREADS client threads; puts the list of errors on Q."""
    errors = []
    fn = smtp_client if kind == "smtp" else http_client
    ts = [threading.Thread(target=fn, args=(port, per_client, base + t * per_client, errors))
          for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q.put(errors)


def cpu_seconds(pid):
    """(utime, stime) of PID, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=("smtp", "http"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="the sink's pid (CPU measured)")
    p.add_argument("--control-url", help="SMTP control URL (default: the HTTP sink itself)")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--delay-ms", type=int, default=20)
    a = p.parse_args()
    ctl = a.control_url or f"http://127.0.0.1:{a.port}"
    mode = {"delay_ms": a.delay_ms}
    if a.kind == "smtp":
        mode["delay_on"] = "data"
    urllib.request.urlopen(urllib.request.Request(
        ctl + "/_control/mode", data=json.dumps(mode).encode(), method="POST")).read()
    per_proc = a.clients // a.procs
    per_client = max(1, a.requests // a.clients)
    total = per_client * per_proc * a.procs
    q = multiprocessing.Queue()
    c0, t0 = cpu_seconds(a.pid), time.monotonic()
    ps = [multiprocessing.Process(target=proc_main,
                                  args=(a.kind, a.port, per_proc, per_client,
                                        i * per_proc * per_client, q))
          for i in range(a.procs)]
    for pr in ps:
        pr.start()
    errors = [e for _ in ps for e in q.get()]
    for pr in ps:
        pr.join()
    c1, t1 = cpu_seconds(a.pid), time.monotonic()
    urllib.request.urlopen(urllib.request.Request(
        ctl + "/_control/reset", data=b"{}", method="POST")).read()
    user, system = c1[0] - c0[0], c1[1] - c0[1]
    print(f"{a.kind}: {total} requests, {a.clients} clients, delay {a.delay_ms} ms: "
          f"{total / (t1 - t0):.0f} req/s, sink CPU {user + system:.2f} s (user {user:.2f}, "
          f"sys {system:.2f}) = {(user + system) / total * 1000:.3f} ms/request, "
          f"errors {len(errors)}"
          + (f" (first: {errors[0]})" if errors else ""))


if __name__ == "__main__":
    main()
