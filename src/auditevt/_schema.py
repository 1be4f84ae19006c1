"""JSON Schema (draft 2020-12) of every wire model, and the checked-in files generated from it.

``src/auditevt/schemas/<Name>.json`` holds the schema of each model in :data:`MODELS`; the
files ship inside the wheel for readers that are not Python. They are generated, never edited:
after changing a model, run ``auditevt schema --write src/auditevt/schemas`` (the test suite
fails until the files match the models).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from auditevt._analytics import AnalyticsTrackRequest, AnalyticsTrackResponse
from auditevt._bandwidth import BandwidthStatsQuery, BandwidthStatsResponse
from auditevt._error_report import ErrorReportRequest, ErrorReportResponse
from auditevt._event import Event
from auditevt._health import HealthResponse
from auditevt._ingest import IngestItem, IngestRequest, IngestResponse, IngestResult
from auditevt._media import MediaEventRequest, MediaEventResponse
from auditevt._pose import PoseFramesRequest, PoseFramesResponse

__all__ = [
    "JSON_SCHEMA_DIALECT",
    "MODELS",
    "SCHEMA_DIR",
    "json_schema",
    "schema_file_text",
    "stale_schema_files",
    "write_schema_files",
]

#: The dialect every schema declares in ``$schema``.
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: Every model of the contract, by class name.
MODELS: dict[str, type[BaseModel]] = {
    model.__name__: model
    for model in (
        Event,
        IngestItem,
        IngestRequest,
        IngestResult,
        IngestResponse,
        AnalyticsTrackRequest,
        AnalyticsTrackResponse,
        MediaEventRequest,
        MediaEventResponse,
        PoseFramesRequest,
        PoseFramesResponse,
        ErrorReportRequest,
        ErrorReportResponse,
        BandwidthStatsQuery,
        BandwidthStatsResponse,
        HealthResponse,
    )
}

#: Where the checked-in schema files live (inside the installed package).
SCHEMA_DIR = Path(__file__).parent / "schemas"


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of the model called ``name`` (a key of :data:`MODELS`)."""
    try:
        model = MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}"
        ) from None
    # Validation mode: the schema says what a reader of the model accepts.
    return {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema(mode="validation")}


def schema_file_text(name: str) -> str:
    """The exact text of ``<name>.json``: two-space indented, UTF-8, one final newline."""
    return json.dumps(json_schema(name), indent=2, ensure_ascii=False) + "\n"


def write_schema_files(directory: Path | str = SCHEMA_DIR) -> list[Path]:
    """(Re)write ``<Name>.json`` for every model into ``directory``; return the paths written.

    Files in ``directory`` that belong to no model are removed, so a renamed model leaves no
    stale schema behind.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in MODELS:
        path = directory / f"{name}.json"
        text = schema_file_text(name)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    for path in directory.glob("*.json"):
        if path.stem not in MODELS:
            path.unlink()
    return written


def stale_schema_files(directory: Path | str = SCHEMA_DIR) -> list[str]:
    """File names in ``directory`` that differ from the models: missing, outdated or orphaned."""
    directory = Path(directory)
    stale = []
    for name in MODELS:
        path = directory / f"{name}.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != schema_file_text(name):
            stale.append(path.name)
    if directory.is_dir():
        stale.extend(
            path.name for path in sorted(directory.glob("*.json")) if path.stem not in MODELS
        )
    return stale
