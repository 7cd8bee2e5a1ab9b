"""An open-loop HTTP load generator, run in its own process.

    python -m bench.loadgen URL RATE SECONDS BODY_FILE TOKEN [CONNECTIONS]

Sends POSTs at a fixed rate whatever the server does (a slow answer does not delay the
next request), and measures each latency from the moment the request was due, so queueing
in the client counts too (no coordinated omission). Prints one JSON line of results.
"""
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


async def run(url: str, rate: float, seconds: float, body: bytes, token: str, connections: int) -> dict:
    parts = urlsplit(url)
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
               f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    total = int(rate * seconds)
    due: asyncio.Queue = asyncio.Queue()
    latencies, statuses = [], {}
    start = time.perf_counter() + 0.2

    async def schedule():
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            due.put_nowait(start + i / rate)
        for _ in range(connections):
            due.put_nowait(None)

    async def worker():
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        while True:
            planned = await due.get()
            if planned is None:
                break
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - planned)
            status = int(status_line.split()[1])
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(schedule(), *[worker() for _ in range(connections)])
    elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2) if latencies else None
    return {"offered_per_s": rate, "sent": total, "achieved_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


if __name__ == "__main__":
    url, rate, seconds, body_file, token = sys.argv[1:6]
    connections = int(sys.argv[6]) if len(sys.argv) > 6 else 32
    body = open(body_file, "rb").read()
    print(json.dumps(asyncio.run(run(url, float(rate), float(seconds), body, token, connections))))
