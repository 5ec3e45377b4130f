"""The files ``--input`` names: what its glob matches, less the files skipped by rule, each reported.

Two kinds of matched path are not read, and every run reports each one (the run summary, and
``skipped_inputs`` in the control totals) rather than dropping its records without a word:

* a hidden file, whose name starts with ``.`` (editors' and copy tools' temporary files, and the
  ``.NAME.UUID.tmp`` files this project writes before renaming them into place);
* a dangling symbolic link (its target does not exist), on local disk. Beam's local file system
  lists a folder and leaves out any entry it cannot stat, so such a link would vanish from the
  match: the folder is listed again here, with the same pattern, to find them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path, PurePath

from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem

HIDDEN = "hidden file (the name starts with '.'); rename it to rate it"


@dataclasses.dataclass(frozen=True)
class InputFiles:
    paths: tuple[str, ...]                 # sorted: the files the run reads
    skipped: tuple[tuple[str, str], ...]   # sorted (path, reason): matched by the glob, not read

    def skipped_json(self) -> list[dict]:
        """``skipped_inputs`` of the control totals: ``[{"path": ..., "reason": ...}, ...]``."""
        return [{"path": path, "reason": reason} for path, reason in self.skipped]


def match_inputs(glob: str) -> InputFiles:
    """The files ``glob`` matches; ValueError naming the glob (and what was skipped) when none is read."""
    matched = FileSystems.match([glob])[0].metadata_list
    paths = sorted(m.path for m in matched if not PurePath(m.path).name.startswith("."))
    skipped = sorted([(m.path, HIDDEN) for m in matched if PurePath(m.path).name.startswith(".")]
                     + _dangling_links(glob))
    if not paths:
        hint = "; skipped: " + "; ".join(f"{path}: {reason}" for path, reason in skipped) if skipped else ""
        raise ValueError(f"--input {glob!r} matches no files{hint}; pass a glob such as 'cdrs/*.avro'")
    return InputFiles(tuple(paths), tuple(skipped))


def normal_path(path: str) -> str:
    """``path`` as recorded in a store: absolute on local disk, unchanged for ``gs://`` and the like."""
    return path if "://" in path else os.path.abspath(path)


def shown_reference(reference: str) -> str:
    """A reference directory as a run records it: resolved on local disk, a ``s3://``/``gs://`` URI as given."""
    return reference if "://" in reference else str(Path(reference).resolve())


def format_skipped(skipped: list[dict]) -> list[str]:
    """Lines of a run summary for the ``skipped_inputs`` of its control totals (none when empty)."""
    if not skipped:
        return []
    lines = [f"skipped inputs  {len(skipped):>14,}   (matched by --input, not read)"]
    lines += [f"  {entry['path']}: {entry['reason']}" for entry in skipped]
    return lines


def _dangling_links(glob: str) -> list[tuple[str, str]]:
    """Dangling symbolic links ``glob`` matches on local disk, which Beam's listing leaves out.

    Lists the same folder as ``LocalFileSystem.match`` (the glob's folder before its first
    wildcard, walked down) and keeps the same pattern (``FileSystem.translate_pattern``).
    """
    if not isinstance(FileSystems.get_filesystem(glob), LocalFileSystem):
        return []   # object stores have no symbolic links
    if glob.endswith(("/", "\\")):
        glob += "*"
    prefix = re.match(r"^[^[*?]*", glob).group(0)
    if prefix == glob:   # no wildcard: the path itself
        candidates = [glob]
    else:
        candidates = (os.path.join(folder, name) for folder, _, names in os.walk(os.path.dirname(prefix))
                      for name in names)
    pattern = re.compile(FileSystem.translate_pattern(glob))
    return [(path, f"dangling symbolic link: its target {os.readlink(path)} does not exist")
            for path in candidates if os.path.islink(path) and not os.path.exists(path) and pattern.match(path)]
