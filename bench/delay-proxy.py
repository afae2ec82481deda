#!/usr/bin/env python3
"""A TCP proxy on loopback that adds a fixed latency in each direction.

Usage: delay-proxy.py LISTEN_PORT TARGET_PORT DELAY_MS [LIFETIME_S]

Every chunk read from one side is written to the other side DELAY_MS later, in order, so a
conversation through it sees a round-trip time of twice DELAY_MS while bandwidth stays that of
loopback. Both ends are 127.0.0.1. The proxy exits by itself after LIFETIME_S seconds (default 1800)
so a benchmark that dies cannot leave it running.
"""

import asyncio
import sys
import time


async def pump(reader, writer, delay):
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic() + delay, data or None))
            if not data:
                break
        await sender
    except (ConnectionError, asyncio.CancelledError):
        sender.cancel()


async def main():
    listen_port, target_port, delay_ms = (int(a) for a in sys.argv[1:4])
    lifetime = float(sys.argv[4]) if len(sys.argv) > 4 else 1800.0
    delay = delay_ms / 1000.0

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pump(client_reader, server_writer, delay),
            pump(server_reader, client_writer, delay),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await asyncio.sleep(lifetime)


if __name__ == "__main__":
    asyncio.run(main())
