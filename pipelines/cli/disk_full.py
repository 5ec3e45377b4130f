"""A full disk, said in one line: which path filled, the space free there now, what the run needs.

A writer that runs out of space raises ``OSError`` with errno ENOSPC, often without a file name
(Arrow's writers give none), and Beam re-raises a worker's error as another exception whose
context is the original one. ``find_disk_full`` follows that chain (``pipelines.worker_errors``);
only a runner whose workers are other processes (``--direct_running_mode=multi_processing``,
portable runners) hands back nothing but the error's text, and then the text is all there is to go
by.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from pipelines.invoice_render import format_units
from pipelines.worker_errors import exception_chain

_ENOSPC_TEXT = (f"[Errno {errno.ENOSPC}]", os.strerror(errno.ENOSPC))


def find_disk_full(error: BaseException) -> OSError | None:
    """The ENOSPC ``OSError`` behind ``error`` (itself, its cause or its context, transitively).

    A worker's error that came back as text only yields an ``OSError`` without a file name.
    """
    found = next((e for e in exception_chain(error) if isinstance(e, OSError) and e.errno == errno.ENOSPC), None)
    if found is not None:
        return found
    if any(text in str(error) for text in _ENOSPC_TEXT):  # from a worker in another process: text only
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def disk_full_message(error: OSError, folder: str, *, inputs: list[str] | None = None,
                      shuffle: str = "files") -> str:
    """One line: the path that filled, the space free on its filesystem now and, given the run's
    ``inputs``, roughly what it needs. Without a file name in ``error`` the path is the folder
    holding ``folder`` (the output the run writes) and its staging folder."""
    from pipelines.options import STAGING_BYTES_PER_RECORD, staging_bytes_estimate

    if error.filename is not None:
        path = os.fsdecode(error.filename)
        message = f"no space left on device writing {path}"
    else:
        path = str(Path(folder).resolve().parent)
        message = f"no space left on device writing under {path}"
    free = shutil.disk_usage(_existing_ancestor(path)).free
    message += f" ({format_units(free, 'byte')} free there now)"
    if inputs:
        records, needed = staging_bytes_estimate(inputs, shuffle)
        message += (f"; this run needs roughly {format_units(needed, 'byte')} free on the disk of {folder} "
                    f"(~{records:,} records estimated from the input files' sizes, about "
                    f"{STAGING_BYTES_PER_RECORD[shuffle]} bytes a record in its staging folder with --shuffle "
                    f"{shuffle})")
    return message + "; free some space or write the output to a bigger disk, then run again"


def _existing_ancestor(path: str) -> str:
    """``path`` or its nearest existing parent (a failed run removes what it had written)."""
    current = Path(path).resolve()
    while not current.exists() and current != current.parent:
        current = current.parent
    return str(current)
