"""``telemetry_client``'s exception tree and its extra (see test_exported_members.py)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import pytest

import telemetry_client
from telemetry_client import (
    ClientError,
    ConfigurationError,
    ConnectError,
    ConnectTimeout,
    DeadlineExceeded,
    HTTPStatusError,
    PoolTimeout,
    ProtocolError,
    RateLimitedError,
    ReadError,
    ReadTimeout,
    ResponseDecodeError,
    RetriesExhausted,
    ServerError,
    ServiceUnavailableError,
    TelemetryError,
    TransportError,
    TransportTimeout,
    WriteError,
    WriteTimeout,
)


def test_every_exported_exception_descends_from_telemetry_error() -> None:
    exceptions = [
        member
        for member in vars(telemetry_client).values()
        if inspect.isclass(member) and issubclass(member, BaseException)
    ]
    assert len(exceptions) == 20
    assert all(issubclass(cls, TelemetryError) for cls in exceptions)


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (ConfigurationError, TelemetryError),
        (TransportError, TelemetryError),
        (ConnectError, TransportError),
        (ReadError, TransportError),
        (WriteError, TransportError),
        (ProtocolError, TransportError),
        (TransportTimeout, TransportError),
        (ConnectTimeout, TransportTimeout),
        (ReadTimeout, TransportTimeout),
        (WriteTimeout, TransportTimeout),
        (PoolTimeout, TransportTimeout),
        (HTTPStatusError, TelemetryError),
        (ClientError, HTTPStatusError),
        (RateLimitedError, ClientError),
        (ServerError, HTTPStatusError),
        (ServiceUnavailableError, ServerError),
        (ResponseDecodeError, TelemetryError),
        (RetriesExhausted, TelemetryError),
        (DeadlineExceeded, RetriesExhausted),
    ],
)
def test_exception_tree_matches_the_drawing(cls: type[Exception], parent: type[Exception]) -> None:
    assert cls.__bases__[0] is parent
    # The tree in _exceptions.py's docstring names every class.
    assert cls.__name__ in (sys.modules["telemetry_client._exceptions"].__doc__ or "")


def test_import_without_the_client_extra_names_it() -> None:
    # A None entry in sys.modules makes the import system (and find_spec) see no httpx.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["httpx"] = None
        try:
            import telemetry_client
        except ImportError as exc:
            print(exc)
        else:
            print("imported")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "httpx" in result.stdout
    assert "pip install 'auditevt[client]'" in result.stdout
