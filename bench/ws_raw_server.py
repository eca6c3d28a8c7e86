"""The WebSocket echo ceiling: a uvloop protocol that does the handshake with the
websockets library, then answers each small client frame by hand (its header,
C unmasking, a server header): no ASGI, no task, no app. Only for bench/ws_cpu.py
(64 B messages, one in flight per client), never a server.

    python bench/ws_raw_server.py --host 127.0.0.1 --port 8000
"""
import argparse
import asyncio

import uvloop
from websockets.server import ServerProtocol
from websockets.speedups import apply_mask


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.handshake = ServerProtocol()
        self.open = False

    def data_received(self, data):
        if not self.open:
            self.handshake.receive_data(data)
            for request in self.handshake.events_received():
                self.handshake.send_response(self.handshake.accept(request))
                self.open = True
            self.transport.write(b"".join(self.handshake.data_to_send()))
            return
        out, i = [], 0
        while i < len(data):  # masked frames of under 126 bytes: 2 + 4 + n each
            n = data[i + 1] & 0x7F
            out.append(bytes((data[i], n)) + apply_mask(data[i + 6:i + 6 + n], data[i + 2:i + 6]))
            i += 6 + n
        self.transport.write(b"".join(out))


async def main(host, port):
    server = await asyncio.get_running_loop().create_server(EchoProtocol, host, port)
    await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args()
    uvloop.run(main(args.host, args.port))
