"""Do-nothing servers on the same stack as tlswatch serve, for bench/receiver_bench.py.

python bench/bare_servers.py smtp|http   -> prints 'ready HOST:PORT' and serves until killed.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from aiosmtpd.smtp import SMTP


class NothingHandler:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


async def smtp() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(NothingHandler(), data_size_limit=10 << 20, loop=loop), "127.0.0.1", 0)
    print(f"ready 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def http() -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def nothing(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"id": "x"}, status_code=201)

    app = Starlette(routes=[Route("/v1/reports", nothing, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)  # connections wait in the backlog until uvicorn serves them
    print(f"ready http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="off"))
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    if sys.argv[1] == "smtp":
        asyncio.run(smtp())
    else:
        http()
