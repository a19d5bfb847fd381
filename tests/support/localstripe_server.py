"""localstripe's server, bound to 127.0.0.1, with its store file where we say.

localstripe's own `localstripe` script listens on every interface and keeps its store in
/tmp/localstripe.pickle, one file shared by every instance on the machine. This runs the
same aiohttp app (`localstripe.server.app`) on loopback with the store file given here.

Usage: python tests/support/localstripe_server.py --port 8420 --store DIR/localstripe.pickle
       [--from-scratch]
"""

from __future__ import annotations

import argparse
import logging
import pickle
import socket

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--store", required=True, help="file localstripe keeps its objects in")
    parser.add_argument("--from-scratch", action="store_true", help="ignore a saved store")
    args = parser.parse_args()

    import localstripe.resources as resources
    from localstripe.server import app

    def dump_to_disk(self):
        with open(args.store, "wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)

    def try_load_from_disk(self):
        try:
            with open(args.store, "rb") as f:
                saved = pickle.load(f)
        except FileNotFoundError:
            return
        self.clear()
        self.update(saved)

    resources.Store.dump_to_disk = dump_to_disk
    resources.Store.try_load_from_disk = try_load_from_disk
    if not args.from_scratch:
        resources.store.try_load_from_disk()

    logger = logging.getLogger("aiohttp.access")
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.StreamHandler())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    web.run_app(app, sock=sock, access_log=logger, print=None)


if __name__ == "__main__":
    main()
