"""Our own exception behind the error a Beam pipeline run raised.

Beam re-raises an exception a DoFn raised as another one (a ``RuntimeError`` naming the step) whose
``__cause__`` or ``__context__`` is the original, in process (the DirectRunner's default
``in_memory`` mode): :func:`exception_chain` walks that chain. A runner whose workers are other
processes (``--direct_running_mode=multi_processing``, the portable runners) loses the original:
it hands back a ``RuntimeError`` holding only the text of the worker's traceback. For that case
alone :func:`worker_error_message` falls back to the text, and only to the line where the worker
raised the exception class named in full (``cdr_schemas.decoders.common.InputFileError: ...``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, TypeVar

E = TypeVar("E", bound=BaseException)

_STEP_SUFFIX = " [while running"   # what Beam appends to the worker's message: the step's label


def exception_chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, then its cause or context, transitively (each once)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def find_cause(error: BaseException, kind: type[E]) -> E | None:
    """The first exception of type ``kind`` in ``error``'s chain (``error`` itself included), or None."""
    return next((e for e in exception_chain(error) if isinstance(e, kind)), None)


def worker_error_message(error: BaseException, kind: type[BaseException]) -> str | None:
    """The message of the ``kind`` exception behind ``error``, or None when there is none.

    In process it is the exception's own text; from a worker in another process, the text after
    ``module.Class: `` on the line of the worker's traceback that names ``kind``, without Beam's
    ``[while running 'step']``.
    """
    found = find_cause(error, kind)
    if found is not None:
        return str(found)
    name = f"{kind.__module__}.{kind.__qualname__}: "
    for line in str(error).splitlines():
        if name in line:
            return line.split(name, 1)[1].split(_STEP_SUFFIX, 1)[0]
    return None


@contextlib.contextmanager
def quiet_worker_errors(kind: type[BaseException]) -> Iterator[None]:
    """While the block runs, drop Beam's ERROR log records (with their traceback) of a DoFn that
    raised ``kind``: the caller reports that error itself, in one line (``worker_error_message``).
    Records of any other error are logged as Beam logs them."""
    name = f"{kind.__module__}.{kind.__qualname__}: "

    def keep(record: logging.LogRecord) -> bool:
        return name not in record.getMessage()

    logger = logging.getLogger("apache_beam.runners.common")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)
