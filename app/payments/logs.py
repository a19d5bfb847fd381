"""JSON logs: one object per line on stdout, for the app's own events and the stdlib's.

Every line has `time` (UTC ISO 8601), `level` and `event`; lines written while serving
a request also carry `request_id` (bound by RequestContextMiddleware via contextvars).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

import orjson
import structlog

_SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
]


def _dumps(event_dict: dict, default: Any = None) -> str:
    """orjson for every line (several times faster than json); json for what it refuses
    (integers past 64 bits), with the same fallback for unknown types."""
    try:
        return orjson.dumps(event_dict, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(event_dict, default=default)


class _StdoutNow:
    """Resolve sys.stdout at write time, so a replaced stdout (pytest capture) is honoured."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send structlog and stdlib logging (hypercorn, psycopg_pool) to one JSON stream."""
    stream = stream or _StdoutNow()
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer = structlog.processors.JSONRenderer(serializer=_dumps)

    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        # Not cached globally: tests reconfigure the level within one process. The hot
        # path (RequestContextMiddleware) binds its own logger once per app instead.
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED_PROCESSORS, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # Our middleware writes the access log; hypercorn's would duplicate it.
    logging.getLogger("hypercorn.access").disabled = True
    # stripe-python logs every API call at info; keep that for LOG_LEVEL=debug.
    logging.getLogger("stripe").setLevel(max(numeric_level, logging.WARNING))


def get_logger(name: str | None = None):
    return structlog.get_logger(name) if name else structlog.get_logger()
