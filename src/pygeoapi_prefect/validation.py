"""Validation of OGC API - Processes execute inputs against a process description.

`validate_inputs` checks the `inputs` of an execute request against the `inputs` of a
pygeoapi process description (its `PROCESS_METADATA`) before any job is created:

* `inputs` must be a JSON object, and every key in it must be a declared input;
* every required input (`minOccurs` >= 1) must be given;
* the number of values of an input must be within `[minOccurs, maxOccurs]`;
* every value must be valid against the input's `schema` (JSON Schema, Draft 2020-12,
  with the OpenAPI `nullable: true` keyword tolerated; `format` is not checked).

A value may also be given in one of the OGC forms instead of the raw (literal) value:

* a qualified value `{"value": ..., "mediaType": ...}`: `value` is validated against
  the schema;
* a reference `{"href": "https://...", "type": ...}`: `href` must be an absolute URL;
  it is never fetched, so nothing more is checked.

The value of a bounding box input (one whose schema has `format: ogc-bbox` or a `bbox`
property), `{"bbox": [...], "crs": ...}`, must hold 4 or 6 numbers and a string `crs`.

A media type given by a qualified value (`mediaType`, or `format.mediaType`) or a
reference (`type`) must be one the schema's `contentMediaType` allows, when the schema
declares any. Formats offered as `oneOf` branches that differ only by their media type
(as OGC descriptions do) are alternatives, not exclusive choices: a value valid under
them is accepted, and its media type picks the format. A JSON object that is itself
valid against the schema is always taken as a literal value, whatever its keys.

A qualified value may hold only `value`, `mediaType`, `encoding`, `schema` and `format`,
and a reference only `href`, `type`, `rel`, `title` and `hreflang` (OGC API - Processes
Part 1, `qualifiedInputValue` and `link`): any other key is refused, naming its path.

`validate_outputs` checks the `outputs` of an execute request: declared output ids, each
asked for as an object of `transmissionMode` (`value` or `reference`) and `format` only.

`validate_bounds` runs first, on the whole execute request (or on the flow-run parameters
made from it): it refuses nesting deeper than `MAX_DEPTH` levels, and a request whose JSON
is larger than the Prefect API accepts as flow-run parameters. The Prefect API stores
deeper parameters, but then fails every query that returns them (its JSON encoder stops
at 255 levels), and it refuses larger ones (422).

Defaults for the occurrence bounds: `maxOccurs` defaults to 1. `minOccurs` defaults to
1, as in OGC API - Processes, *unless* the input's schema declares a `default`: then the
process can do without the input, and the input is optional.

A description that is itself broken (an input schema that is not valid JSON Schema, a
`$ref` that cannot be resolved, occurrence bounds that are not numbers) does not make
validation fail: the broken part is skipped, and a warning is logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Literal, NoReturn
from urllib.parse import urlsplit

from jsonschema import exceptions as _exceptions  # type: ignore[import-untyped, unused-ignore]
from jsonschema import validators as _validators  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "MAX_DEPTH",
    "InputValidationError",
    "RequestTooLargeError",
    "validate_bounds",
    "validate_inputs",
    "validate_outputs",
]

LOGGER: Final = logging.getLogger(__name__)

_MAX_MESSAGE: Final = 500

MAX_DEPTH: Final = 64
"""The deepest nesting of objects and arrays in an execute request (the request is level 1).

Far below the 255 levels at which the Prefect API's JSON encoder fails, and far above
what real inputs need (a GeoJSON feature collection of multipolygons nests 7 levels).
"""

_OUTPUT_KEYS: Final = ("transmissionMode", "format")
_QUALIFIED_KEYS: Final = ("value", "mediaType", "encoding", "schema", "format")
_REFERENCE_KEYS: Final = ("href", "type", "rel", "title", "hreflang")

_Unbounded = Literal["unbounded"]


class InputValidationError(ValueError):
    """An execute request whose inputs do not match the process description.

    Attributes:
        input_id: The identifier of the offending input, or None when the error is not
            about one input (e.g. the inputs are not a JSON object).
        message: The message, which names the offending input.
    """

    def __init__(self, message: str, input_id: str | None = None) -> None:
        if len(message) > _MAX_MESSAGE:
            message = message[: _MAX_MESSAGE - 3] + "..."
        super().__init__(message)
        self.message = message
        self.input_id = input_id


class RequestTooLargeError(InputValidationError):
    """An execute request (or its flow-run parameters) larger than the Prefect API accepts."""


def validate_bounds(
    document: Any,
    max_bytes: int | None,
    *,
    name: str = "the execute request",
    max_depth: int = MAX_DEPTH,
) -> None:
    """Refuse a JSON document nested too deeply, or too large, to be stored in Prefect.

    Args:
        document: The document, as parsed from JSON (an execute request, or flow-run
            parameters).
        max_bytes: The most bytes its compact JSON may have (measured as the Prefect API
            measures parameters), or None (or 0) for no limit.
        name: What the document is, for the message.
        max_depth: The deepest nesting of objects and arrays allowed (the document itself
            is level 1).

    Raises:
        InputValidationError: When the document is nested deeper than `max_depth`; the
            message gives the JSON pointer of the first value too deep.
        RequestTooLargeError: When its JSON is larger than `max_bytes`.
    """
    path = _too_deep(document, max_depth)
    if path is not None:
        raise InputValidationError(
            f"{name} is nested more than {max_depth} levels deep (at {_pointer(path)})",
            input_id=path[1] if len(path) > 1 and path[0] == "inputs" else None,
        )
    if not max_bytes:
        return
    size = len(json.dumps(document, separators=(",", ":"), default=str).encode())
    if size > max_bytes:
        raise RequestTooLargeError(
            f"{name} is {size} bytes as JSON; the Prefect API accepts at most {max_bytes}"
        )


def _too_deep(document: Any, max_depth: int) -> list[str] | None:
    """The path to the first object or array nested deeper than `max_depth`, or None."""
    if not isinstance(document, Mapping | list | tuple):
        return None
    # Depth first without recursion: the stack of open containers is the path.
    stack: list[tuple[str, Iterator[tuple[str, Any]]]] = [("", _children(document))]
    while stack:
        for key, child in stack[-1][1]:
            if isinstance(child, Mapping | list | tuple):
                if len(stack) >= max_depth:
                    return [part for part, _ in stack[1:]] + [key]
                stack.append((key, _children(child)))
                break
        else:
            stack.pop()
    return None


def _children(container: Mapping[Any, Any] | Sequence[Any]) -> Iterator[tuple[str, Any]]:
    if isinstance(container, Mapping):
        return ((str(key), value) for key, value in container.items())
    return ((str(index), value) for index, value in enumerate(container))


def _pointer(path: Sequence[str]) -> str:
    """A JSON pointer (RFC 6901) for a message: parts cut to 40 characters, at most 8 parts."""
    parts = [part[:40].replace("~", "~0").replace("/", "~1") for part in path[:8]]
    return "/" + "/".join(parts) + ("/..." if len(path) > 8 else "")


def _type_or_null(
    validator: Any, types: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[Any]:
    """`type`, but with `null` allowed by OpenAPI's `nullable: true`."""
    if instance is None and schema.get("nullable") is True:
        return
    yield from _validators.Draft202012Validator.VALIDATORS["type"](
        validator, types, instance, schema
    )


_Validator: Final[Any] = _validators.extend(
    _validators.Draft202012Validator, {"type": _type_or_null}
)


def validate_inputs(description: Mapping[str, Any], inputs: Any) -> None:
    """Validate the inputs of an execute request against a process description.

    Args:
        description: A pygeoapi process description (`PROCESS_METADATA`); its
            `inputs` maps input identifiers to input descriptions (`schema`,
            `minOccurs`, `maxOccurs`).
        inputs: The `inputs` of the execute request, as parsed from JSON.

    Raises:
        InputValidationError: When the inputs do not match the description; its
            message names the offending input. No other exception is raised for bad
            inputs.
    """
    if not isinstance(inputs, Mapping):
        raise InputValidationError(
            f"inputs must be a JSON object, got {_json_type(inputs)}", input_id=None
        )
    declared = description.get("inputs")
    if declared is None:
        declared = {}
    if not isinstance(declared, Mapping):
        LOGGER.warning(
            "process %r: 'inputs' of the description is not an object; inputs not checked",
            description.get("id"),
        )
        return

    unknown = [key for key in inputs if not isinstance(key, str) or key not in declared]
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise InputValidationError(f"unknown input{plural} {names}", input_id=str(unknown[0]))

    bounds: dict[str, tuple[int, int | _Unbounded]] = {}
    for input_id, definition in declared.items():
        if not isinstance(definition, Mapping):
            LOGGER.warning("input %r: its description is not an object; not checked", input_id)
            continue
        bounds[str(input_id)] = _occurrences(str(input_id), definition)

    missing = [
        input_id
        for input_id, (min_occurs, _) in bounds.items()
        if min_occurs >= 1 and input_id not in inputs
    ]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        plural = "s" if len(missing) > 1 else ""
        raise InputValidationError(f"missing required input{plural} {names}", input_id=missing[0])

    for input_id, value in inputs.items():
        if input_id in bounds:
            _check_input(input_id, declared[input_id], bounds[input_id], value)


def validate_outputs(description: Mapping[str, Any], outputs: Any) -> None:
    """Check the `outputs` of an execute request: declared outputs, known keys and modes.

    Args:
        description: A pygeoapi process description (`PROCESS_METADATA`).
        outputs: The `outputs` of the execute request (None when it has none).

    Raises:
        InputValidationError: When an output is not declared, or is not asked for as an
            object of `transmissionMode` (`value` or `reference`) and `format` (an object).
    """
    if outputs is None:
        return
    if not isinstance(outputs, Mapping):
        raise InputValidationError(f"outputs must be a JSON object, got {_json_type(outputs)}")
    declared = description.get("outputs")
    declared = declared if isinstance(declared, Mapping) else {}
    for output_id, spec in outputs.items():
        if output_id not in declared:
            raise InputValidationError(f"unknown output {str(output_id)[:100]!r}", str(output_id))
        if not isinstance(spec, Mapping):
            raise InputValidationError(
                f"output {output_id!r} must be a JSON object, got {_json_type(spec)}", output_id
            )
        unknown = [key for key in spec if key not in _OUTPUT_KEYS]
        if unknown:
            raise InputValidationError(
                f"output {output_id!r}: unknown key {str(unknown[0])[:100]!r} "
                f"(at {_pointer(['outputs', output_id, str(unknown[0])])}); "
                f"an output takes {_names(_OUTPUT_KEYS)}",
                output_id,
            )
        mode = spec.get("transmissionMode", "value")
        if mode not in ("value", "reference"):
            raise InputValidationError(
                f"output {output_id!r}: transmissionMode must be 'value' or 'reference'", output_id
            )
        if "format" in spec and not isinstance(spec["format"], Mapping):
            raise InputValidationError(
                f"output {output_id!r}: format must be a JSON object, "
                f"got {_json_type(spec['format'])}",
                output_id,
            )


def _occurrences(input_id: str, definition: Mapping[str, Any]) -> tuple[int, int | _Unbounded]:
    """The `(minOccurs, maxOccurs)` of an input, with defaults for missing or bad values."""
    schema = definition.get("schema")
    has_default = isinstance(schema, Mapping) and "default" in schema
    min_occurs: int = 0 if has_default else 1
    raw_min = definition.get("minOccurs")
    if raw_min is not None:
        if _is_int(raw_min) and raw_min >= 0:
            min_occurs = raw_min
        else:
            LOGGER.warning(
                "input %r: minOccurs %r is not valid; using %d", input_id, raw_min, min_occurs
            )
    max_occurs: int | _Unbounded = 1
    raw_max = definition.get("maxOccurs")
    if raw_max is not None:
        if raw_max == "unbounded" or (_is_int(raw_max) and raw_max >= 1):
            max_occurs = raw_max
        else:
            LOGGER.warning("input %r: maxOccurs %r is not valid; unbounded", input_id, raw_max)
            max_occurs = "unbounded"
    if max_occurs != "unbounded" and max_occurs < min_occurs:
        LOGGER.warning(
            "input %r: maxOccurs %r is less than minOccurs %r; using minOccurs",
            input_id,
            max_occurs,
            min_occurs,
        )
        max_occurs = min_occurs
    return min_occurs, max_occurs


def _check_input(
    input_id: str,
    definition: Mapping[str, Any],
    bounds: tuple[int, int | _Unbounded],
    value: Any,
) -> None:
    """Check the value(s) of one input against its occurrence bounds and schema."""
    min_occurs, max_occurs = bounds
    schema = _Schema(input_id, definition.get("schema"))
    if max_occurs == 1:
        if isinstance(value, list) and not schema.allows_arrays:
            got = f"got {len(value)}" if len(value) > 1 else f"got an array of {len(value)}"
            raise InputValidationError(f"input {input_id!r} takes at most 1 value, {got}", input_id)
        _check_value(schema, value, None)
        return

    # Several values allowed: an array is a list of values, unless the schema is an
    # array schema and the array is not an array of arrays (then it is one value).
    if isinstance(value, list) and not (
        schema.allows_arrays and not (value and all(isinstance(item, list) for item in value))
    ):
        values: list[Any] = value
    else:
        values = [value]
    count = len(values)
    if count < min_occurs:
        raise InputValidationError(
            f"input {input_id!r} takes at least {_values(min_occurs)}, got {count}", input_id
        )
    if max_occurs != "unbounded" and count > max_occurs:
        raise InputValidationError(
            f"input {input_id!r} takes at most {_values(max_occurs)}, got {count}", input_id
        )
    for index, item in enumerate(values):
        _check_value(schema, item, index if values is value else None)


class _Schema:
    """The schema of one input, with a validator for it when it is a valid JSON Schema."""

    def __init__(self, input_id: str, schema: Any) -> None:
        self.input_id = input_id
        self.schema = schema
        self.validator: Any = None
        self.media_types: list[str] = []
        self.allows_arrays = True
        self.is_bbox = False
        if schema is None:
            return
        if not isinstance(schema, Mapping | bool):
            LOGGER.warning("input %r: schema is not a JSON Schema; value not checked", input_id)
            return
        try:
            _Validator.check_schema(schema)
        except _exceptions.SchemaError as err:
            LOGGER.warning(
                "input %r: schema is not a valid JSON Schema (%s); value not checked",
                input_id,
                err.message,
            )
            return
        except Exception as err:
            LOGGER.warning(
                "input %r: schema could not be checked (%s); value not checked", input_id, err
            )
            return
        self.validator = _Validator(_formats_as_any_of(schema))
        if isinstance(schema, Mapping):
            self.allows_arrays = _allows_arrays(schema)
            self.media_types = _media_types(schema)
            self.is_bbox = _is_bbox(schema)

    def errors(self, instance: Any) -> str | None:
        """The message of the most relevant error of `instance`, or None when it is valid."""
        if self.validator is None:
            return None
        try:
            error = _exceptions.best_match(self.validator.iter_errors(instance))
        except RecursionError:
            return "value is nested too deeply"
        except Exception as err:  # an unresolvable $ref, a bad regex in the data...
            LOGGER.warning(
                "input %r: schema could not be applied (%s); value not checked",
                self.input_id,
                err,
            )
            return None
        if error is None:
            return None
        message = str(error.message)
        path = "/".join(str(part) for part in error.absolute_path)
        return f"{message} (at /{path})" if path else message


_ANNOTATIONS = frozenset(
    {"contentMediaType", "contentEncoding", "contentSchema", "title", "description", "examples"}
)


def _formats_as_any_of(schema: Any) -> Any:
    """The schema with each `oneOf` of formats (alike but for their media type) as `anyOf`.

    OGC process descriptions offer formats as `oneOf` branches that differ only by
    `contentMediaType`, an annotation that JSON Schema does not check: every value valid
    under one branch is valid under all, and `oneOf` would refuse it. The media type a
    value gives is checked against the branches' media types instead (`_check_media_type`).
    """
    if isinstance(schema, list):
        return [_formats_as_any_of(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    result = {key: _formats_as_any_of(value) for key, value in schema.items()}
    branches = result.get("oneOf")
    if isinstance(branches, list) and "anyOf" not in result:
        bare = [
            {k: v for k, v in branch.items() if k not in _ANNOTATIONS}
            for branch in branches
            if isinstance(branch, Mapping)
        ]
        if any(bare[i] == bare[j] for i in range(len(bare)) for j in range(i)):
            result["anyOf"] = result.pop("oneOf")
    return result


def _check_value(schema: _Schema, value: Any, index: int | None) -> None:
    """Check one value (a literal, a qualified value, a reference or a bounding box)."""
    where = f"input {schema.input_id!r}" + ("" if index is None else f" value {index + 1}")

    def fail(message: str) -> NoReturn:
        raise InputValidationError(f"{where}: {message}", schema.input_id)

    error = schema.errors(value)
    form = _form(value)
    if form is not None and (schema.validator is None or error is not None):
        allowed = _REFERENCE_KEYS if form == "href" else _QUALIFIED_KEYS
        kind = "a reference" if form == "href" else "a qualified value"
        unknown = [key for key in value if key not in allowed]
        if unknown:
            path = ["inputs", schema.input_id, *([] if index is None else [str(index)])]
            fail(
                f"unknown key {str(unknown[0])[:100]!r} in {kind} "
                f"(at {_pointer([*path, str(unknown[0])])}); {kind} takes {_names(allowed)}"
            )
        if form == "href":
            href = value["href"]
            if not isinstance(href, str) or not _is_url(href):
                fail(f"href {href!r} is not an absolute URL")
            _check_media_type(schema, value.get("type"), "type", fail)
            return
        media_type = value.get("mediaType")
        if media_type is None and isinstance(value.get("format"), Mapping):
            media_type = value["format"].get("mediaType")
        _check_media_type(schema, media_type, "mediaType", fail)
        value = value["value"]
        error = schema.errors(value)
    if schema.is_bbox and isinstance(value, Mapping) and "bbox" in value:
        bbox = value["bbox"]
        if (
            not isinstance(bbox, list)
            or len(bbox) not in (4, 6)
            or not all(_is_number(item) for item in bbox)
        ):
            fail(f"bbox must be an array of 4 or 6 numbers, got {bbox!r}")
        crs = value.get("crs")
        if crs is not None and not isinstance(crs, str):
            fail(f"crs must be a string, got {crs!r}")
    if error is not None:
        fail(error)


def _check_media_type(
    schema: _Schema, media_type: Any, key: str, fail: Callable[[str], NoReturn]
) -> None:
    """Refuse a media type that the schema's `contentMediaType` does not allow."""
    if media_type is None:
        return
    if not isinstance(media_type, str):
        fail(f"{key} must be a string, got {media_type!r}")
    if schema.media_types and not any(
        _media_type_matches(media_type, allowed) for allowed in schema.media_types
    ):
        allowed = ", ".join(repr(item) for item in schema.media_types)
        fail(f"media type {media_type!r} is not allowed (expected {allowed})")


def _form(value: Any) -> Literal["href", "value"] | None:
    """Whether a value is a reference (`href`) or a qualified value (`value`)."""
    if isinstance(value, Mapping):
        if "href" in value:
            return "href"
        if "value" in value:
            return "value"
    return None


def _is_bbox(schema: Mapping[str, Any]) -> bool:
    """Whether a schema is an OGC bounding box schema."""
    properties = schema.get("properties")
    return schema.get("format") == "ogc-bbox" or (
        isinstance(properties, Mapping) and "bbox" in properties
    )


def _allows_arrays(schema: Mapping[str, Any]) -> bool:
    """Whether a schema (or one of its immediate alternatives) is an array schema."""
    kind = schema.get("type")
    if kind == "array" or (isinstance(kind, list) and "array" in kind):
        return True
    if kind is None and ("items" in schema or "prefixItems" in schema):
        return True
    for keyword in ("oneOf", "anyOf", "allOf"):
        branches = schema.get(keyword)
        if isinstance(branches, list) and any(
            isinstance(branch, Mapping) and _allows_arrays(branch) for branch in branches
        ):
            return True
    return False


def _media_types(schema: Mapping[str, Any]) -> list[str]:
    """The `contentMediaType`s of a schema and of its immediate alternatives."""
    found: list[str] = []
    if isinstance(schema.get("contentMediaType"), str):
        found.append(schema["contentMediaType"])
    for keyword in ("oneOf", "anyOf"):
        branches = schema.get(keyword)
        if isinstance(branches, list):
            for branch in branches:
                if isinstance(branch, Mapping) and isinstance(branch.get("contentMediaType"), str):
                    found.append(branch["contentMediaType"])
    return found


def _media_type_matches(given: str, allowed: str) -> bool:
    """Whether a media type matches an allowed one (parameters ignored, `type/*` allowed)."""
    given_type = given.split(";", 1)[0].strip().lower()
    allowed_type = allowed.split(";", 1)[0].strip().lower()
    if allowed_type in ("*/*", given_type):
        return True
    if allowed_type.endswith("/*"):
        return given_type.startswith(allowed_type[:-1])
    return False


def _is_url(text: str) -> bool:
    """Whether a string is an absolute URL (a scheme, and a host or a path)."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return bool(parts.scheme) and bool(parts.netloc or parts.path) and " " not in text


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _names(keys: Sequence[str]) -> str:
    return ", ".join(keys[:-1]) + f" and {keys[-1]}"


def _values(count: int) -> str:
    return f"{count} value" if count == 1 else f"{count} values"


def _json_type(value: Any) -> str:
    """The JSON name of a value's type."""
    names: Sequence[tuple[type | tuple[type, ...], str]] = (
        (bool, "a boolean"),
        ((int, float), "a number"),
        (str, "a string"),
        ((list, tuple), "an array"),
    )
    if value is None:
        return "null"
    for kind, name in names:
        if isinstance(value, kind):
            return name
    return type(value).__name__
