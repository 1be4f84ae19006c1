from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from auditevt import Event
from auditevt._fields import clean_text, error_path, first_duplicate


def test_clean_text_keeps_tabs_newlines_and_unicode() -> None:
    assert clean_text("a\tb\r\nc ünï 字") == "a\tb\r\nc ünï 字"


@pytest.mark.parametrize("text", ["\x00", "a\x07", "\x1b[31m", "\x7f", "\ud800"])
def test_clean_text_refuses_control_characters_and_surrogates(text: str) -> None:
    with pytest.raises(ValueError):
        clean_text(text)


def test_first_duplicate() -> None:
    assert first_duplicate([1, 2, 3]) is None
    assert first_duplicate([1, 2, 3, 2, 1]) == 2
    assert first_duplicate([]) is None


class _Inner(BaseModel):
    value: int


class _Outer(BaseModel):
    items: list[_Inner]


def test_error_path_joins_fields_and_indexes() -> None:
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate({"items": [{"value": 1}, {"value": "x"}]})
    assert error_path(info.value.errors()[0]) == "items[1].value"


def test_error_path_drops_union_member_names() -> None:
    with pytest.raises(ValidationError) as info:
        Event.model_validate_json('{"action": 5, "timestamp": 7}')
    paths = {error_path(error) for error in info.value.errors()}
    assert {"action", "timestamp"} <= paths
    assert not any("[" in path for path in paths)


def test_error_path_of_the_whole_document() -> None:
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate_json("not json")
    assert error_path(info.value.errors()[0]) == "(root)"
