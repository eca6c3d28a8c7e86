"""The ceiling: an asyncio.Protocol on uvloop that answers every chunk of bytes
it receives with one fixed HTTP response, without parsing anything.

Only valid for small GET requests that arrive in one read (wrk's hello,
connect and stream-1m scenarios). With --close it sends `Connection: close` and
closes after answering, for the connect scenario; with --stream it answers with
the 1 MiB body of the stream-1m scenario in one write.
"""
import argparse
import asyncio

import uvloop

KEEP = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
        b"Hello, world!")
CLOSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
         b"Connection: close\r\n\r\nHello, world!")


STREAM_BODY = bytes(range(256)) * 256 * 16  # the pattern bench/apps/stream.py sends
STREAM = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
          b"Content-Length: %d\r\n\r\n" % len(STREAM_BODY)) + STREAM_BODY


class Fixed(asyncio.Protocol):
    close = False
    keep = KEEP

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.close:
            self.transport.write(CLOSE)
            self.transport.close()
        else:
            self.transport.write(self.keep)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--close", action="store_true")
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    Fixed.close = args.close
    if args.stream:
        Fixed.keep = STREAM
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(Fixed, args.host, args.port, backlog=2048, reuse_address=True))
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
