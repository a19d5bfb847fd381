"""hypercorn's configuration, with a listening socket per worker.

hypercorn binds one socket in its supervisor and hands it to every worker. asyncio then
accepts up to `backlog` pending connections at once in whichever worker wakes first, so
a burst of new keep-alive connections (wrk's, or nginx's upstream keepalive pool after a
reload) can all land on one worker: it does all the work while the others idle, which
halved the throughput of some `make bench-app` rounds. Here each worker binds its own
socket instead (SO_REUSEPORT, which hypercorn sets when there are several workers), and
the kernel spreads new connections over the workers' sockets.
"""

from __future__ import annotations

import multiprocessing

from hypercorn.config import Config, Sockets


class WorkerSocketsConfig(Config):
    def create_sockets(self) -> Sockets:
        if multiprocessing.parent_process() is None:
            # The supervisor: binds nothing. Its workers receive None for these sockets
            # (see _BoundByEachWorker), and a worker given None calls create_sockets itself.
            return _BoundByEachWorker(secure_sockets=[], insecure_sockets=[], quic_sockets=[])
        return super().create_sockets()


class _BoundByEachWorker(Sockets):
    """The supervisor's empty sockets, which reach a worker as None."""

    def __reduce__(self):
        return (_no_sockets, ())


def _no_sockets() -> None:
    return None
