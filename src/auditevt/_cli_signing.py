"""Where the ``relay``, ``demo`` and ``telemetry`` commands find their signing keys.

``--signing-key-file FILE``, or else the ``TELEMETRY_SIGNING_KEY`` environment variable: one
Standard Webhooks secret (``whsec_...``), or several separated by whitespace during a rotation.
There is no option taking the secret itself: a command line is visible to every user in ``ps``.
"""

from __future__ import annotations

import argparse
import os

from auditevt._cli import UsageError
from auditevt._signing import SigningKey, signing_keys

__all__ = [
    "ENV_SIGNING_KEY",
    "add_signing_key_argument",
    "read_signing_keys",
    "signing_keys_argument",
]

#: The same variable as ``telemetry_client.ENV_SIGNING_KEY``.
ENV_SIGNING_KEY = "TELEMETRY_SIGNING_KEY"

#: A key file holds a few secrets of under 100 characters: more is not a key file.
_MAX_FILE_CHARACTERS = 64 * 1024


def add_signing_key_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--signing-key-file`` to ``parser``; ``what`` says what the key does there."""
    parser.add_argument(
        "--signing-key-file",
        metavar="FILE",
        help=f"{what}: a file holding a Standard Webhooks secret (whsec_...), or several "
        f"separated by whitespace during a rotation; default: ${ENV_SIGNING_KEY}",
    )


def read_signing_keys(path: str | None) -> tuple[SigningKey, ...] | None:
    """The keys in the file at ``path``, or else in the environment; None when neither has any.

    ``ValueError`` says what is wrong (unreadable, empty, not a key) without showing the key.
    """
    if path is None:
        text = os.environ.get(ENV_SIGNING_KEY, "")
        source = f"${ENV_SIGNING_KEY}"
        if not text.strip():
            return None
    else:
        source = f"--signing-key-file {path}"
        try:
            with open(path, encoding="utf-8") as stream:
                text = stream.read(_MAX_FILE_CHARACTERS)
        except OSError as exc:
            raise ValueError(f"cannot read {source}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{source} is not UTF-8 text") from None
        if not text.strip():
            raise ValueError(f"{source} is empty: put a whsec_ secret in it")
    try:
        return signing_keys(text.split())
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def signing_keys_argument(args: argparse.Namespace, command: str) -> tuple[SigningKey, ...] | None:
    """The keys ``--signing-key-file`` (or the environment) names; ``UsageError`` if unusable."""
    try:
        return read_signing_keys(args.signing_key_file)
    except ValueError as exc:
        raise UsageError(f"{command}: {exc}") from None
