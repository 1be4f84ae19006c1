"""What verification found: one :class:`Finding` per altered row, broken link or bad seal."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["Finding", "FindingKind", "VerifyReport"]

FindingKind = Literal[
    "altered_row",
    "deleted_row",
    "inserted_row",
    "unsealed_rows",
    "retired_rows",
    "altered_seal",
    "broken_chain",
    "bad_signature",
    "unknown_key",
    "missing_seal",
    "unpublished_seal",
    "published_mismatch",
    "bad_published_seal",
]


@dataclass(frozen=True)
class Finding:
    """One thing verification found, naming the row or the seal."""

    kind: FindingKind
    """What it is (``altered_row``, ``broken_chain``, ...; see ``docs/security.md``)."""
    message: str
    """One line for a person, naming the row id or the seal number."""
    row_id: int | None = None
    """The audit row concerned, if one."""
    seal: int | None = None
    """The seal (its ``seq``) concerned, if one."""
    problem: bool = True
    """False for what is expected in a healthy log (recent rows not sealed yet)."""

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON object."""
        return asdict(self)


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of one verification."""

    findings: tuple[Finding, ...]
    """Everything found, problems and notes, in the order found."""
    rows_checked: int
    """Audit rows whose content was recomputed."""
    seals_checked: int
    """Seals whose signature and chain were checked."""
    unsealed_rows: int = 0
    """Rows after the last seal."""
    oldest_unsealed_age: float | None = None
    """Seconds since the oldest of them was written (None: every row is sealed)."""

    @property
    def ok(self) -> bool:
        """True when nothing is wrong (notes such as recent unsealed rows do not count)."""
        return not any(finding.problem for finding in self.findings)

    @property
    def problems(self) -> tuple[Finding, ...]:
        """The findings that make :attr:`ok` false."""
        return tuple(finding for finding in self.findings if finding.problem)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object (what ``auditevt verify --json`` prints)."""
        return {
            "ok": self.ok,
            "rows_checked": self.rows_checked,
            "seals_checked": self.seals_checked,
            "unsealed_rows": self.unsealed_rows,
            "oldest_unsealed_age": self.oldest_unsealed_age,
            "findings": [finding.to_json() for finding in self.findings],
        }

    def summary(self) -> str:
        """One line: clean, or how many problems."""
        state = "OK" if self.ok else f"{len(self.problems)} problem(s) found"
        return (
            f"{state}: {self.rows_checked} rows and {self.seals_checked} seals checked, "
            f"{self.unsealed_rows} rows not yet sealed"
        )
