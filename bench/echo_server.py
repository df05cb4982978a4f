"""The limit for the OCPP benchmark: a bare websockets server that parses each JSON
frame and answers an empty CALLRESULT, with the same websockets settings as the edge.

    python bench/echo_server.py PORT
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol


async def answer(connection: ServerConnection) -> None:
    async for frame in connection:
        message = json.loads(frame)
        await connection.send(json.dumps([3, message[1], {}], separators=(",", ":")))


async def main(port: int) -> None:
    async with serve(
        answer,
        "127.0.0.1",
        port,
        subprotocols=[Subprotocol("ocpp1.6")],
        compression=None,
    ):
        await asyncio.Future()


if __name__ == "__main__":
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(int(sys.argv[1])))
