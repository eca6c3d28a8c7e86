"""Open COUNT keep-alive connections (one GET each, response read in full) and
hold them idle. Protocol on stdin/stdout, one JSON line per answer:

  (start)  -> {"opened": N, "failed": M, "errors": {...}}
  "count"  -> {"alive": K}    connections the server has not closed
  "quit" or end of input      -> close everything and exit
"""
import argparse
import asyncio
import collections
import ipaddress
import json
import resource
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def open_one(host, port, sem, conns, errors):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
            writer.write(REQUEST)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await asyncio.wait_for(reader.readexactly(length), 30)
            if not head.startswith(b"HTTP/1.1 200"):
                raise ValueError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            conns.append((reader, writer))
        except Exception as exc:  # noqa: BLE001 - every failure is counted
            errors[type(exc).__name__] += 1


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(args):
    if not ipaddress.ip_address(args.host).is_loopback:
        raise SystemExit("idle_conns.py only targets loopback addresses")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.count + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conns, errors = [], collections.Counter()
    sem = asyncio.Semaphore(args.concurrency)
    await asyncio.gather(*(open_one(args.host, args.port, sem, conns, errors)
                           for _ in range(args.count)))
    say({"opened": len(conns), "failed": sum(errors.values()), "errors": dict(errors)})
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.strip()
        if command == "count":
            alive = sum(1 for r, w in conns if not (r.at_eof() or w.is_closing()))
            say({"alive": alive})
        else:
            break
    for _, writer in conns:
        writer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
