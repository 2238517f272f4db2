#!/usr/bin/env python3
"""The peer: what an operator would write instead of tokend. Fetches one client-credentials token per instance
(client ids i0 … iN-1, the secret from a file, the same form body tokend sends) from TOKEN_URL with asyncio and
aiohttp, at most CONCURRENCY requests in flight (one shared connection pool), and prints one JSON line: tokens,
failures, the seconds the fetching took and the seconds since the interpreter started.

    peer.py TOKEN_URL N CONCURRENCY SECRET_FILE
"""
import asyncio
import json
import sys
import time

STARTED = time.monotonic()
import aiohttp  # noqa: E402  (its import time counts: the operator pays it too)


async def main(url, n, concurrency, secret):
    tokens, failures = {}, 0
    limit = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(name):
            nonlocal failures
            form = {"grant_type": "client_credentials", "client_id": name, "client_secret": secret}
            async with limit:
                try:
                    async with session.post(url, data=form) as response:
                        body = await response.json(content_type=None)
                        if response.status == 200 and body.get("access_token"):
                            tokens[name] = (body["access_token"], time.time() + float(body.get("expires_in", 0)))
                        else:
                            failures += 1
                except (aiohttp.ClientError, ValueError, asyncio.TimeoutError):
                    failures += 1

        start = time.monotonic()
        await asyncio.gather(*(fetch(f"i{i}") for i in range(n)))
        fetching = time.monotonic() - start
    return {"tokens": len(tokens), "failures": failures, "fetch_s": round(fetching, 3),
            "total_s": round(time.monotonic() - STARTED, 3), "concurrency": concurrency,
            "aiohttp": aiohttp.__version__, "python": sys.version.split()[0]}


if __name__ == "__main__":
    url, n, concurrency, secret_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    with open(secret_file) as f:
        secret = f.read().rstrip("\n")
    print(json.dumps(asyncio.run(main(url, n, concurrency, secret))))
