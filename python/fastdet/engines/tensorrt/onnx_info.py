"""An ONNX model's metadata_props and graph inputs, read straight from the protobuf wire format:
the builder needs no onnx package for them, and a model is read once for both its facts and its
content hash."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or invalid varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of one protobuf message; length-delimited values as views."""
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos)
        field, wire = tag >> 3, tag & 7
        value: int | memoryview
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("truncated protobuf message")
        yield field, value


def _text(value: int | memoryview) -> str:
    if isinstance(value, int):
        raise ValueError("expected a string field")
    return bytes(value).decode("utf-8")


def _message(value: int | memoryview) -> memoryview:
    if isinstance(value, int):
        raise ValueError("expected a message field")
    return value


@dataclass(frozen=True)
class OnnxInput:
    name: str
    shape: tuple[int | None, ...]  # None for a symbolic or unknown dimension
    elem_type: int  # ONNX TensorProto data type (1 float32, 10 float16)


@dataclass(frozen=True)
class OnnxInfo:
    metadata_props: dict[str, str]
    inputs: tuple[OnnxInput, ...]  # graph inputs that are not initializers


def _dimension(data: memoryview) -> int | None:
    for field, value in _fields(data):
        if field == 1 and isinstance(value, int):  # dim_value (int64)
            return value - (1 << 64) if value >= 1 << 63 else value
    return None  # dim_param or unset


def _value_info(data: memoryview) -> OnnxInput:
    name, elem_type, shape = "", 0, []
    for field, value in _fields(data):
        if field == 1:
            name = _text(value)
        elif field == 2:  # TypeProto
            for t_field, t_value in _fields(_message(value)):
                if t_field != 1:  # tensor_type
                    continue
                for k_field, k_value in _fields(_message(t_value)):
                    if k_field == 1 and isinstance(k_value, int):
                        elem_type = k_value
                    elif k_field == 2:  # TensorShapeProto
                        shape = [
                            _dimension(_message(d_value))
                            for d_field, d_value in _fields(_message(k_value))
                            if d_field == 1
                        ]
    return OnnxInput(name, tuple(shape), elem_type)


def read_onnx_info(data: bytes | memoryview) -> OnnxInfo:
    """The metadata_props and the graph inputs of a serialized ONNX ModelProto."""
    view = memoryview(data)
    props: dict[str, str] = {}
    inputs: list[OnnxInput] = []
    initializers: set[str] = set()
    try:
        for field, value in _fields(view):
            if field == 14:  # metadata_props: StringStringEntryProto
                key = text = ""
                for e_field, e_value in _fields(_message(value)):
                    if e_field == 1:
                        key = _text(e_value)
                    elif e_field == 2:
                        text = _text(e_value)
                props[key] = text
            elif field == 7:  # graph
                for g_field, g_value in _fields(_message(value)):
                    if g_field == 11:
                        inputs.append(_value_info(_message(g_value)))
                    elif g_field == 5:  # initializer: TensorProto, name is field 8
                        for t_field, t_value in _fields(_message(g_value)):
                            if t_field == 8:
                                initializers.add(_text(t_value))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"build_engine: not a valid ONNX model ({error})") from None
    return OnnxInfo(props, tuple(i for i in inputs if i.name not in initializers))


__all__ = ["OnnxInfo", "OnnxInput", "read_onnx_info"]
