"""Where seals are published outside the database: a protocol, and a directory by default.

A copy outside the database is what catches an attacker who rewrites ``audit_log`` *and*
``audit_seals`` (dropping the latest seals, or replacing them all): ``auditevt verify
--published DIR`` compares the two. Point the directory at storage the database's owner cannot
rewrite (another host, a write-once bucket synced from it, a WORM volume).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from audit_middleware._exceptions import IntegrityError
from audit_middleware.integrity._seal import Seal, SealFormatError

__all__ = ["DirectorySink", "SealSink", "load_published"]


@runtime_checkable
class SealSink(Protocol):
    """Receives every new seal, after it is committed. Publishing the same seal again is a no-op.

    Raise any exception to report a failure: the sealer logs it, counts it and publishes the
    latest seal again on its next pass.
    """

    def publish(self, seal: Seal) -> None:
        """Store ``seal`` durably outside the database."""


def _name(seq: int) -> str:
    return f"seal-{seq:012d}.json"


class DirectorySink:
    """Writes each seal to ``<directory>/seal-<seq>.json``, atomically, never replacing one."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"DirectorySink({str(self.directory)!r})"

    def publish(self, seal: Seal) -> None:
        """Write ``seal``; raises ``IntegrityError`` if a different seal of that seq is there."""
        path = self.directory / _name(seal.seq)
        data = json.dumps(seal.to_json(), sort_keys=True) + "\n"
        try:
            if path.exists():
                if path.read_text(encoding="utf-8") == data:
                    return
                raise IntegrityError(
                    f"{path} already holds a different seal {seal.seq}: refusing to replace it"
                )
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".seal-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as stream:
                    stream.write(data)
                    stream.flush()
                    os.fsync(stream.fileno())
                os.link(temporary, path)  # fails if it appeared meanwhile: never replaces
            finally:
                os.unlink(temporary)
        except FileExistsError as exc:
            raise IntegrityError(f"{path} appeared while publishing seal {seal.seq}") from exc
        except OSError as exc:
            raise IntegrityError(f"cannot publish seal {seal.seq} to {path}: {exc}") from exc


def load_published(directory: str | os.PathLike[str]) -> dict[int, Seal | str]:
    """Seals in a :class:`DirectorySink` directory by seq; a string says why a file is unusable.

    Raises ``IntegrityError`` when the directory cannot be read.
    """
    folder = Path(directory)
    try:
        paths = sorted(folder.glob("seal-*.json"))
    except OSError as exc:  # pragma: no cover - glob swallows most errors
        raise IntegrityError(f"cannot read published seals in {folder}: {exc}") from exc
    if not folder.is_dir():
        raise IntegrityError(f"{folder} is not a directory of published seals")
    found: dict[int, Seal | str] = {}
    for path in paths:
        stem = path.stem.removeprefix("seal-")
        if not stem.isdigit():
            continue
        try:
            seal: Seal | str = Seal.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, SealFormatError) as exc:
            seal = f"{path.name}: {exc}"
        found[int(stem)] = seal
    return found
