"""Execute inputs validated against process descriptions (no Prefect, no server)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pygeoapi.process.hello_world import PROCESS_METADATA as HELLO

from pygeoapi_prefect.examples.echo import PROCESS_METADATA as ECHO
from pygeoapi_prefect.validation import (
    MAX_DEPTH,
    InputValidationError,
    RequestTooLargeError,
    validate_bounds,
    validate_inputs,
    validate_outputs,
)


def describe(**inputs: dict[str, Any]) -> dict[str, Any]:
    return {"id": "test", "version": "1.0.0", "inputs": inputs}


def refused(description: dict[str, Any], inputs: Any, input_id: str | None) -> str:
    with pytest.raises(InputValidationError) as info:
        validate_inputs(description, inputs)
    assert info.value.input_id == input_id
    if input_id is not None:
        assert repr(input_id) in str(info.value)
    return str(info.value)


ARRAYS = describe(
    three={"schema": {"type": "integer"}, "minOccurs": 1, "maxOccurs": 3},
    many={"schema": {"type": "string"}, "minOccurs": 0, "maxOccurs": "unbounded"},
    pair={"schema": {"type": "array", "items": {"type": "number"}}, "minOccurs": 0},
    pairs={
        "schema": {"type": "array", "items": {"type": "number"}},
        "minOccurs": 0,
        "maxOccurs": 2,
    },
)

SEVERAL = describe(
    two_or_more={"schema": {"type": "number"}, "minOccurs": 2, "maxOccurs": 4},
)

BINARY = describe(
    image={
        "schema": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png"},
        "minOccurs": 0,
    },
    document={
        "schema": {
            "anyOf": [
                {"type": "string", "contentMediaType": "application/xml"},
                {"type": "string", "contentMediaType": "application/json"},
            ]
        },
        "minOccurs": 0,
    },
    anything={"schema": {"type": "string", "contentMediaType": "text/*"}, "minOccurs": 0},
)

BBOX_SCHEMA = {
    "type": "object",
    "required": ["bbox"],
    "properties": {
        "bbox": {"type": "array", "items": {"type": "number"}},
        "crs": {"type": "string", "format": "uri"},
    },
    "format": "ogc-bbox",
}
BBOX = describe(
    area={"schema": BBOX_SCHEMA, "minOccurs": 0},
    label={"schema": {"type": "string"}, "minOccurs": 0},
)


# -- the example processes --------------------------------------------------------------


def test_echo_example_and_full_inputs_pass() -> None:
    validate_inputs(ECHO, ECHO["example"]["inputs"])
    validate_inputs(ECHO, {"echoInput": "x", "pause": 0})
    validate_inputs(ECHO, {"echoInput": "", "pause": 2.5})


def test_hello_world_example_and_optional_inputs_pass() -> None:
    validate_inputs(HELLO, HELLO["example"]["inputs"])
    validate_inputs(HELLO, {"name": "World"})
    validate_inputs(HELLO, {"name": "W", "as_bytes": True, "media_type": "text/plain"})


def test_wrong_type_names_the_input() -> None:
    message = refused(ECHO, {"echoInput": "x", "pause": "abc"}, "pause")
    assert message == "input 'pause': 'abc' is not of type 'number'"
    refused(HELLO, {"name": "W", "as_bytes": "yes"}, "as_bytes")


def test_schema_bounds_are_enforced() -> None:
    message = refused(ECHO, {"echoInput": "x", "pause": 4000}, "pause")
    assert "4000" in message
    refused(ECHO, {"echoInput": "x", "pause": -1}, "pause")


def test_missing_required_input() -> None:
    assert refused(ECHO, {}, "echoInput") == "missing required input 'echoInput'"
    assert refused(HELLO, {"message": "hi"}, "name") == "missing required input 'name'"


def test_unknown_input() -> None:
    assert refused(ECHO, {"echoInput": "x", "foo": 1}, "foo") == "unknown input 'foo'"
    message = refused(HELLO, {"name": "W", "a": 1, "b": 2}, "a")
    assert "'a'" in message and "'b'" in message


def test_inputs_must_be_an_object() -> None:
    for inputs in ([], "echoInput", None, 3):
        message = refused(ECHO, inputs, None)
        assert message.startswith("inputs must be a JSON object")


def test_null_is_refused_unless_nullable() -> None:
    refused(HELLO, {"name": None}, "name")
    nullable = describe(x={"schema": {"type": "string", "nullable": True}})
    validate_inputs(nullable, {"x": None})
    validate_inputs(nullable, {"x": "s"})
    refused(nullable, {"x": 1}, "x")


def test_a_process_without_inputs_refuses_any() -> None:
    validate_inputs({"id": "none"}, {})
    refused({"id": "none"}, {"x": 1}, "x")


# -- minOccurs defaults -----------------------------------------------------------------


def test_missing_min_occurs_means_required() -> None:
    description = describe(x={"schema": {"type": "string"}})
    refused(description, {}, "x")
    validate_inputs(description, {"x": "s"})


def test_missing_min_occurs_with_a_schema_default_means_optional() -> None:
    validate_inputs(describe(x={"schema": {"type": "string", "default": "a"}}), {})


def test_explicit_min_occurs_wins_over_default() -> None:
    description = describe(x={"schema": {"type": "string", "default": "a"}, "minOccurs": 1})
    refused(description, {}, "x")


# -- several values ---------------------------------------------------------------------


def test_max_occurs_one_refuses_arrays() -> None:
    message = refused(ECHO, {"echoInput": ["a", "b", "c"]}, "echoInput")
    assert message == "input 'echoInput' takes at most 1 value, got 3"
    message = refused(ECHO, {"echoInput": ["a"]}, "echoInput")
    assert message == "input 'echoInput' takes at most 1 value, got an array of 1"


def test_max_occurs_one_accepts_an_array_schema_value() -> None:
    validate_inputs(ARRAYS, {"three": 1, "pair": [1, 2]})
    message = refused(ARRAYS, {"three": 1, "pair": [1, "b"]}, "pair")
    assert "'b' is not of type 'number'" in message
    assert "(at /1)" in message


def test_bounded_occurrences() -> None:
    validate_inputs(ARRAYS, {"three": 1})
    validate_inputs(ARRAYS, {"three": [1]})
    validate_inputs(ARRAYS, {"three": [1, 2, 3]})
    message = refused(ARRAYS, {"three": [1, 2, 3, 4]}, "three")
    assert message == "input 'three' takes at most 3 values, got 4"
    message = refused(ARRAYS, {"three": []}, "three")
    assert message == "input 'three' takes at least 1 value, got 0"


def test_each_occurrence_is_validated() -> None:
    message = refused(ARRAYS, {"three": [1, "two", 3]}, "three")
    assert message == "input 'three' value 2: 'two' is not of type 'integer'"


def test_unbounded_occurrences() -> None:
    validate_inputs(ARRAYS, {"three": 1, "many": []})
    validate_inputs(ARRAYS, {"three": 1, "many": "one"})
    validate_inputs(ARRAYS, {"three": 1, "many": [str(i) for i in range(1000)]})
    refused(ARRAYS, {"three": 1, "many": ["a", 2]}, "many")


def test_min_occurs_above_one() -> None:
    validate_inputs(SEVERAL, {"two_or_more": [1, 2.5]})
    validate_inputs(SEVERAL, {"two_or_more": [1, 2, 3, 4]})
    message = refused(SEVERAL, {"two_or_more": [1]}, "two_or_more")
    assert message == "input 'two_or_more' takes at least 2 values, got 1"
    refused(SEVERAL, {"two_or_more": 1}, "two_or_more")
    refused(SEVERAL, {}, "two_or_more")
    message = refused(SEVERAL, {"two_or_more": [1, 2, 3, 4, 5]}, "two_or_more")
    assert message == "input 'two_or_more' takes at most 4 values, got 5"


def test_array_schema_with_several_occurrences() -> None:
    validate_inputs(ARRAYS, {"three": 1, "pairs": [1, 2]})
    validate_inputs(ARRAYS, {"three": 1, "pairs": [[1, 2], [3, 4]]})
    message = refused(ARRAYS, {"three": 1, "pairs": [[1], [2], [3]]}, "pairs")
    assert message == "input 'pairs' takes at most 2 values, got 3"


# -- enums ------------------------------------------------------------------------------


ENUM = describe(
    colour={"schema": {"type": "string", "enum": ["red", "green"]}},
    sizes={"schema": {"enum": [1, 2, 3]}, "minOccurs": 0, "maxOccurs": "unbounded"},
)


def test_enum() -> None:
    validate_inputs(ENUM, {"colour": "red", "sizes": [1, 3]})
    message = refused(ENUM, {"colour": "blue"}, "colour")
    assert "'blue' is not one of ['red', 'green']" in message
    refused(ENUM, {"colour": "red", "sizes": [1, 4]}, "sizes")


def test_enum_of_the_pygeoapi_echo_process() -> None:
    from pygeoapi.process.echo import PROCESS_METADATA as OGC_ECHO

    validate_inputs(OGC_ECHO, {"echoInput": "Echo", "pause": 5.5})
    refused(OGC_ECHO, {"echoInput": "Hello", "pause": 5.5}, "echoInput")
    refused(OGC_ECHO, {"echoInput": "Echo", "pause": 1}, "pause")


# -- qualified values, references, bounding boxes -----------------------------------------


def test_qualified_value() -> None:
    validate_inputs(ECHO, {"echoInput": {"value": "x", "mediaType": "text/plain"}})
    validate_inputs(ECHO, {"echoInput": "x", "pause": {"value": 1}})
    message = refused(ECHO, {"echoInput": {"value": 3, "mediaType": "text/plain"}}, "echoInput")
    assert message == "input 'echoInput': 3 is not of type 'string'"


def test_qualified_values_as_occurrences() -> None:
    validate_inputs(ARRAYS, {"three": [{"value": 1}, 2, {"value": 3}]})
    message = refused(ARRAYS, {"three": [{"value": 1}, {"value": "x"}]}, "three")
    assert message.startswith("input 'three' value 2:")


def test_object_schema_takes_objects_as_literals() -> None:
    description = describe(obj={"schema": {"type": "object"}})
    validate_inputs(description, {"obj": {"value": 3}})
    validate_inputs(description, {"obj": {"href": "not a url"}})
    refused(description, {"obj": "s"}, "obj")


def test_href_reference() -> None:
    validate_inputs(ECHO, {"echoInput": {"href": "https://example.org/data.txt"}})
    validate_inputs(BINARY, {"image": {"href": "https://example.org/a.png", "type": "image/png"}})
    message = refused(ECHO, {"echoInput": {"href": "not a url"}}, "echoInput")
    assert message == "input 'echoInput': href 'not a url' is not an absolute URL"
    refused(ECHO, {"echoInput": {"href": 42}}, "echoInput")


def test_href_media_type_mismatch() -> None:
    message = refused(
        BINARY, {"image": {"href": "https://example.org/a.gif", "type": "image/gif"}}, "image"
    )
    assert message == "input 'image': media type 'image/gif' is not allowed (expected 'image/png')"


def test_qualified_value_media_type() -> None:
    validate_inputs(BINARY, {"image": {"value": "iVBORw0KGgo=", "mediaType": "image/png"}})
    validate_inputs(
        BINARY, {"image": {"value": "iVBORw0KGgo=", "format": {"mediaType": "IMAGE/PNG"}}}
    )
    validate_inputs(BINARY, {"image": {"value": "iVBORw0KGgo="}})
    message = refused(BINARY, {"image": {"value": "AAAA", "mediaType": "image/jpeg"}}, "image")
    assert "'image/jpeg' is not allowed" in message
    refused(BINARY, {"image": {"value": "AAAA", "format": {"mediaType": "text/plain"}}}, "image")
    refused(BINARY, {"image": {"value": "AAAA", "mediaType": 3}}, "image")


def test_media_types_of_alternatives_and_wildcards() -> None:
    validate_inputs(BINARY, {"document": {"value": "<a/>", "mediaType": "application/xml"}})
    validate_inputs(BINARY, {"document": {"href": "https://e.org/x", "type": "application/json"}})
    refused(BINARY, {"document": {"href": "https://e.org/x", "type": "text/csv"}}, "document")
    validate_inputs(BINARY, {"anything": {"value": "a,b", "mediaType": "text/csv; charset=utf-8"}})
    refused(BINARY, {"anything": {"value": "a", "mediaType": "image/png"}}, "anything")


def test_bbox() -> None:
    validate_inputs(BBOX, {"area": {"bbox": [0, 0, 1, 1]}})
    validate_inputs(BBOX, {"area": {"bbox": [0, 0, 0, 1.5, 1, 2], "crs": "EPSG:4326"}})
    message = refused(BBOX, {"area": {"bbox": [0, 0, 1]}}, "area")
    assert message == "input 'area': bbox must be an array of 4 or 6 numbers, got [0, 0, 1]"
    refused(BBOX, {"area": {"bbox": [0, 0, "1", 1]}}, "area")
    refused(BBOX, {"area": {"bbox": [0, 0, True, 1]}}, "area")
    refused(BBOX, {"area": {"bbox": [0, 0, 1, 1], "crs": 4326}}, "area")
    refused(BBOX, {"area": {"value": {"bbox": [0, 1]}}}, "area")
    validate_inputs(BBOX, {"area": {"value": {"bbox": [0, 0, 1, 1]}, "mediaType": "x/y"}})
    refused(BBOX, {"area": [0, 0, 1, 1]}, "area")
    # not a bbox input: the schema decides
    refused(BBOX, {"label": {"bbox": [0, 0, 1, 1]}}, "label")
    validate_inputs(describe(obj={"schema": {"type": "object"}}), {"obj": {"bbox": [1]}})


# -- broken descriptions ----------------------------------------------------------------


def test_invalid_schema_skips_the_value_check(caplog: pytest.LogCaptureFixture) -> None:
    description = describe(
        bad={"schema": {"type": "no-such-type"}},
        good={"schema": {"type": "string"}, "minOccurs": 0},
    )
    with caplog.at_level(logging.WARNING, logger="pygeoapi_prefect.validation"):
        validate_inputs(description, {"bad": 1})
    assert "'bad'" in caplog.text
    refused(description, {"bad": 1, "good": 2}, "good")
    refused(description, {}, "bad")


def test_unresolvable_ref_skips_the_value_check(caplog: pytest.LogCaptureFixture) -> None:
    description = describe(
        geom={"schema": {"$ref": "https://example.invalid/schemas/geometry.json"}}
    )
    with caplog.at_level(logging.WARNING, logger="pygeoapi_prefect.validation"):
        validate_inputs(description, {"geom": {"type": "Point"}})
    assert "'geom'" in caplog.text


def test_shapely_process_example_passes() -> None:
    pytest.importorskip("shapely")
    from pygeoapi.process.shapely_functions import PROCESS_METADATA as SHAPELY

    validate_inputs(SHAPELY, SHAPELY["example"]["inputs"])


def test_broken_occurrence_bounds_and_descriptions() -> None:
    description = describe(
        x={"schema": {"type": "string"}, "minOccurs": "two", "maxOccurs": "lots"},
        y="not an object",  # type: ignore[arg-type]
        z={"schema": 42, "minOccurs": 0},
    )
    validate_inputs(description, {"x": ["a", "b"], "z": 1})
    validate_inputs(description, {"x": "a", "y": object()})
    validate_inputs({"inputs": ["not", "a", "mapping"]}, {"anything": 1})


def test_long_values_give_short_messages() -> None:
    message = refused(ECHO, {"echoInput": "x", "pause": "9" * 10_000}, "pause")
    assert len(message) <= 500


def test_deeply_nested_values_are_refused_not_crashing() -> None:
    schema = {"type": "array", "items": {"$ref": "#"}}
    nested: list[Any] = []
    for _ in range(5000):
        nested = [nested]
    message = refused(describe(x={"schema": schema}), {"x": nested}, "x")
    assert message == "input 'x': value is nested too deeply"


def nested(depth: int) -> list[Any]:
    """An array nested `depth` levels deep (`[]` is 1 level)."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_unknown_keys_of_a_qualified_value_are_refused_by_path() -> None:
    message = refused(ECHO, {"echoInput": {"value": "x", "x": nested(250)}}, "echoInput")
    assert message.startswith("input 'echoInput': unknown key 'x' in a qualified value")
    assert "(at /inputs/echoInput/x)" in message
    message = refused(ARRAYS, {"three": [1, {"value": 2, "extra": 1}]}, "three")
    assert "(at /inputs/three/1/extra)" in message
    validate_inputs(
        ECHO,
        {
            "echoInput": {
                "value": "x",
                "mediaType": "text/plain",
                "encoding": "utf-8",
                "schema": {"type": "string"},
                "format": {"mediaType": "text/plain"},
            }
        },
    )


def test_unknown_keys_of_a_reference_are_refused_by_path() -> None:
    href = "https://example.org/data.txt"
    message = refused(ECHO, {"echoInput": {"href": href, "x": 1}}, "echoInput")
    assert message.startswith("input 'echoInput': unknown key 'x' in a reference")
    assert "(at /inputs/echoInput/x)" in message
    link = {"href": href, "type": "text/plain", "rel": "data", "title": "t", "hreflang": "en"}
    validate_inputs(ECHO, {"echoInput": link})


def test_output_specs_take_transmission_mode_and_format_only() -> None:
    validate_outputs(ECHO, {"echoOutput": {"transmissionMode": "value", "format": {}}})
    with pytest.raises(InputValidationError) as info:
        validate_outputs(ECHO, {"echoOutput": {"transmissionMode": "value", "x": nested(250)}})
    assert info.value.input_id == "echoOutput"
    assert "unknown key 'x' (at /outputs/echoOutput/x)" in str(info.value)
    with pytest.raises(InputValidationError, match="format must be a JSON object"):
        validate_outputs(ECHO, {"echoOutput": {"format": [[]]}})


def test_bounds_refuse_nesting_deeper_than_max_depth_by_path() -> None:
    request = {"inputs": {"echoInput": "x"}, "outputs": {"echoOutput": {"x": nested(250)}}}
    with pytest.raises(InputValidationError) as info:
        validate_bounds(request, None)
    message = str(info.value)
    assert message.startswith(f"the execute request is nested more than {MAX_DEPTH} levels")
    assert "(at /outputs/echoOutput/x/0/0/0/0/0/...)" in message
    # The request is level 1, `inputs` level 2, the value from level 3 on.
    validate_bounds({"inputs": {"a": nested(MAX_DEPTH - 2)}}, None)
    with pytest.raises(InputValidationError) as info:
        validate_bounds({"inputs": {"a": nested(MAX_DEPTH - 1)}}, None)
    assert info.value.input_id == "a"
    # No recursion: far deeper than Python's recursion limit is refused, not crashing.
    with pytest.raises(InputValidationError, match="nested more than"):
        validate_bounds({"inputs": {"a": nested(100_000)}}, None)


def test_bounds_refuse_requests_larger_than_prefect_accepts() -> None:
    request = {"inputs": {"echoInput": "x" * 1000}}
    size = len('{"inputs":{"echoInput":""}}') + 1000
    validate_bounds(request, size)
    with pytest.raises(RequestTooLargeError, match=f"is {size} bytes as JSON; .* at most 1000"):
        validate_bounds(request, 1000)
    # Measured as Prefect measures parameters: non-ASCII characters as \u escapes.
    with pytest.raises(RequestTooLargeError):
        validate_bounds({"inputs": {"echoInput": "\u00e9" * 200}}, 1000)


# -- properties -------------------------------------------------------------------------


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    extra=st.text(min_size=1).filter(lambda key: key not in ECHO["inputs"]),
    value=json_values,
    echo=st.one_of(st.none(), st.text()),
)
def test_any_unknown_key_is_refused_by_name(extra: str, value: Any, echo: str | None) -> None:
    inputs = {extra: value} if echo is None else {"echoInput": echo, extra: value}
    with pytest.raises(InputValidationError) as info:
        validate_inputs(ECHO, inputs)
    assert info.value.input_id == extra
    assert repr(extra) in str(info.value)


@given(value=json_values.filter(lambda v: not isinstance(v, str | dict)))
def test_any_non_string_echo_input_is_refused(value: Any) -> None:
    with pytest.raises(InputValidationError) as info:
        validate_inputs(ECHO, {"echoInput": value})
    assert info.value.input_id == "echoInput"
    assert "'echoInput'" in str(info.value)


@given(
    value=st.text(),
    pause=st.none() | st.integers(0, 3600) | st.floats(0, 3600),
    qualified=st.booleans(),
)
def test_valid_strings_always_pass(value: str, pause: float | None, qualified: bool) -> None:
    inputs: dict[str, Any] = {"echoInput": {"value": value} if qualified else value}
    if pause is not None:
        inputs["pause"] = pause
    validate_inputs(ECHO, inputs)


@given(inputs=json_values)
def test_only_input_validation_errors(inputs: Any) -> None:
    for description in (ECHO, HELLO, ARRAYS, SEVERAL, BINARY, BBOX, ENUM):
        with contextlib.suppress(InputValidationError):
            validate_inputs(description, inputs)


@given(count=st.integers(0, 6))
def test_occurrence_counts(count: int) -> None:
    inputs = {"three": list(range(count))}
    if 1 <= count <= 3:
        validate_inputs(ARRAYS, inputs)
    else:
        refused(ARRAYS, inputs, "three")


FORMATS = describe(
    image={
        "schema": {
            "oneOf": [
                {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png"},
                {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/tiff"},
            ]
        },
        "minOccurs": 0,
    },
    choice={
        "schema": {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 10}]},
        "minOccurs": 0,
    },
)


@pytest.mark.parametrize(
    "value",
    [
        "iVBORw0=",
        {"value": "iVBORw0=", "mediaType": "image/png"},
        {"value": "SUkqAA==", "format": {"mediaType": "image/tiff"}},
        {"href": "https://example.com/a.tif", "type": "image/tiff"},
    ],
)
def test_formats_offered_as_one_of_accept_each_format(value: Any) -> None:
    validate_inputs(FORMATS, {"image": value})


def test_formats_offered_as_one_of_refuse_another_media_type() -> None:
    message = refused(FORMATS, {"image": {"value": "AAAA", "mediaType": "image/jpeg"}}, "image")
    assert "image/jpeg" in message


def test_one_of_that_is_not_a_choice_of_formats_stays_exclusive() -> None:
    validate_inputs(FORMATS, {"choice": 3})
    refused(FORMATS, {"choice": 12}, "choice")  # valid under both branches
