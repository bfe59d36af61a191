"""Unsigned LEB128, the variable-length integers of Automerge's binary format."""

from __future__ import annotations


def read_uleb(data: bytes, at: int) -> tuple[int, int]:
    """The integer at ``at`` and the position after it. Raises IndexError when the bytes end
    first, ValueError for one longer than 64 bits."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at
        if shift > 63:
            raise ValueError("an integer in Automerge's format is too long")


def write_uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
