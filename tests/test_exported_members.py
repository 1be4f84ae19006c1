"""Every package's ``__all__`` is honest: complete, sorted, unique, and nothing foreign leaks."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = [
    "auditevt",
    "telemetry_client",
    "telemetry_client.testing",
    "audit_middleware",
    "audit_middleware.delivery",
    "audit_middleware.request",
    "audit_middleware.review",
    "audit_middleware.storage",
]
# Names public although they start with an underscore.
INCLUDED_PRIVATE_MEMBERS = {"__version__"}


def isort_key(name: str) -> tuple[int, str]:
    # Constants, then classes, then functions: the order ruff's RUF022 keeps.
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


@pytest.mark.parametrize("package", PACKAGES)
def test_exported_members_all_lists_every_public_member_sorted(package: str) -> None:
    module = importlib.import_module(package)
    exported = list(module.__all__)
    # Subpackages appear as attributes once imported; they are not members.
    public = {
        name
        for name, value in vars(module).items()
        if (not name.startswith("_") or name in INCLUDED_PRIVATE_MEMBERS)
        and not inspect.ismodule(value)
    }
    assert set(exported) == public
    assert exported == sorted(exported, key=isort_key)
    assert len(exported) == len(set(exported))


@pytest.mark.parametrize("package", PACKAGES)
def test_exported_members_come_from_their_own_package(package: str) -> None:
    module = importlib.import_module(package)
    top = package.split(".")[0]
    for name in module.__all__:
        member = getattr(module, name)
        if inspect.isclass(member) or inspect.isfunction(member):
            assert member.__module__ == top or member.__module__.startswith(f"{top}."), name
