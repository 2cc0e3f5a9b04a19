#!/usr/bin/env python3
"""sink_latency.py SMTP_URL HTTP_URL CONCURRENCY SECONDS: what the sinks alone take per call.

Runs CONCURRENCY SMTP sessions (each sending one e-mail after another to calibrate@sink.test,
as usher sends them: MAIL, RCPT and BDAT with the message in one write when the sink offers
CHUNKING, else MAIL, RCPT and DATA in one write and the message after the 354) and
2 x CONCURRENCY HTTP keep-alive connections (each POSTing to /calibrate one request after
another) at the same time for SECONDS, the load a handler row puts on the sinks at that
in-flight level, from one asyncio client with nothing in between. Prints one JSON object:
mean and median milliseconds per e-mail and per HTTP request, and how many of each. Standard
library only.
"""
import asyncio
import json
import statistics
import sys
import time
from urllib.parse import urlsplit

BODY = ("From: <calibrate@sink.test>\r\nTo: <calibrate@sink.test>\r\nSubject: calibrate\r\n\r\n"
        + "calibration line of about the length of a welcome e-mail's\r\n" * 24 + ".\r\n").encode()


async def reply(r, keep=False):
    """Reads one SMTP reply; fails on a refusal. Returns its lines when KEEP."""
    lines = b""
    while True:
        line = await r.readline()
        if not line:
            raise ConnectionError("SMTP sink closed the connection")
        if keep:
            lines += line
        if line[3:4] != b"-":
            if line[:1] not in b"23":
                raise RuntimeError(f"SMTP sink refused: {line!r}")
            return lines


async def smtp_session(url, end, out):
    r, w = await asyncio.open_connection(url.hostname, url.port)
    await reply(r)
    w.write(b"EHLO calibrate\r\n")
    chunking = b"CHUNKING" in await reply(r, keep=True)
    env = b"MAIL FROM:<calibrate@sink.test>\r\nRCPT TO:<calibrate@sink.test>\r\n"
    while time.monotonic() < end:
        t = time.perf_counter()
        if chunking:
            w.write(env + b"BDAT %d LAST\r\n" % (len(BODY) - 3) + BODY[:-3])
        else:
            w.write(env + b"DATA\r\n")
        for _ in range(3):
            await reply(r)
        if not chunking:
            w.write(BODY)
            await reply(r)
        out.append((time.perf_counter() - t) * 1000)
    w.write(b"QUIT\r\n")
    w.close()


async def http_conn(url, end, out):
    r, w = await asyncio.open_connection(url.hostname, url.port)
    req = (f"POST /calibrate HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
           "Content-Length: 2\r\n\r\n{}").encode()
    while time.monotonic() < end:
        t = time.perf_counter()
        w.write(req)
        length = 0
        while True:
            line = await r.readline()
            if not line:
                raise ConnectionError("HTTP sink closed the connection")
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
            if line in (b"\r\n", b"\n"):
                break
        await r.readexactly(length)
        out.append((time.perf_counter() - t) * 1000)
    w.close()


async def main(smtp_url, http_url, conc, secs):
    end = time.monotonic() + secs
    mails, posts = [], []
    await asyncio.gather(*[smtp_session(urlsplit(smtp_url), end, mails) for _ in range(conc)],
                         *[http_conn(urlsplit(http_url), end, posts) for _ in range(2 * conc)])
    def stats(v):
        return {"n": len(v), "mean_ms": round(statistics.mean(v), 2),
                "median_ms": round(statistics.median(v), 2)}
    print(json.dumps({"concurrency": conc, "seconds": secs, "smtp": stats(mails),
                      "http": stats(posts)}))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
