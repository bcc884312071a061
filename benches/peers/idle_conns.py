"""Opens N keep-alive client connections to a proxy; each makes one GET, reads
the whole response, then sits idle. Prints `READY <ok> <failed>` once all are
open and idle, then holds them until a line (or EOF) arrives on stdin.

Usage: python3 idle_conns.py PORT [N] [HOST_HEADER]

At most 64 requests are in flight at once, so the proxy's upstream pool stays
small and what grows with N is the per-client-connection state.
"""

import asyncio
import resource
import sys

IN_FLIGHT = 64


async def open_one(port, host, sem, held, failures):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), 30)
            writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status = head.split(b" ", 2)[1]
            length = None
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if length is not None:
                await reader.readexactly(length)
            elif chunked:
                await reader.readuntil(b"0\r\n\r\n")
            if status != b"200":
                raise RuntimeError(f"status {status!r}")
            held.append(writer)
        except (OSError, RuntimeError, asyncio.IncompleteReadError, asyncio.TimeoutError,
                asyncio.LimitOverrunError, ValueError, IndexError) as e:
            failures.append(repr(e))


async def main():
    port = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    host = sys.argv[3] if len(sys.argv) > 3 else "localhost"
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sem = asyncio.Semaphore(IN_FLIGHT)
    held, failures = [], []
    await asyncio.gather(*(open_one(port, host, sem, held, failures) for _ in range(n)))
    print(f"READY {len(held)} {len(failures)}", flush=True)
    if failures:
        print(f"first failure: {failures[0]}", file=sys.stderr, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for writer in held:
        writer.close()


if __name__ == "__main__":
    asyncio.run(main())
