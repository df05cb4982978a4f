"""The limit for the OCPP benchmark: a bare websockets server that does the minimum of a
JSON-RPC server (parse each text frame, answer an empty CALLRESULT), with the same
websockets settings as the edge.

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
        await connection.send(json.dumps([3, message[1], {}]))


async def main(port: int) -> None:
    # compression=None: the edge's default (websocket_compression = false).
    async with serve(
        answer, "127.0.0.1", port, subprotocols=[Subprotocol("ocpp1.6")], compression=None
    ):
        await asyncio.Future()


if __name__ == "__main__":
    # One socket per charger: 500 chargers need more than the usual 1,024 descriptors.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(int(sys.argv[1])))
