"""A TCP proxy that holds each request for a while before passing it on: a bucket as far away
as a real S3 region, made from moto. Used by `S3_LATENCY_MS=50 bash benches/drain.sh`.

    python3 benches/lag_proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_SECONDS

Client-to-server data that arrives after a pause (the start of a request on a kept-alive
connection) waits DELAY_SECONDS; the rest of that request and every response pass at once.
"""
import asyncio
import sys
import time

LISTEN, UPSTREAM, DELAY = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
NEW_REQUEST_GAP = 0.005  # seconds of silence after which data counts as a new request


async def pump(reader, writer, delay):
    last = 0.0
    try:
        while data := await reader.read(65536):
            if delay and time.monotonic() - last > NEW_REQUEST_GAP:
                await asyncio.sleep(delay)
            last = time.monotonic()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer):
    upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", UPSTREAM)
    await asyncio.gather(pump(client_reader, upstream_writer, DELAY), pump(upstream_reader, client_writer, 0))


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with server:
        await server.serve_forever()


asyncio.run(main())
