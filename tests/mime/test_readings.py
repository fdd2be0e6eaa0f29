"""mime/readings: each lenient decoder on a small real input, and the distinct readings."""

from __future__ import annotations

import base64
import binascii
import quopri

import pytest

from scanmail.mime import readings as r

# 45 bytes: a whole number of base64 quads, so no padding for the readings to part on
DATA = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$ test payload!!\x00\xff" * 3
B64 = base64.encodebytes(DATA)  # 76-column lines, as a mail client writes them


@pytest.mark.parametrize("reading", r.BASE64_READINGS, ids=lambda f: f.__name__)
def test_every_base64_reading_decodes_a_well_formed_body(reading) -> None:
    assert reading(B64) == DATA


@pytest.mark.parametrize("reading", r.QP_READINGS, ids=lambda f: f.__name__)
def test_every_qp_reading_decodes_a_well_formed_body(reading) -> None:
    encoded = quopri.encodestring(DATA)
    assert r.is_plain_qp(encoded)
    assert reading(encoded) == DATA


def test_base64_readings_differ_on_padding_inside_the_data() -> None:
    text = b"TUFJTA==RVZJTA=="  # "MAIL" then "EVIL", each padded
    assert r.b64_restart_at_pad(text) == b"MAILEVIL"
    assert r.b64_quads(text) == b"MAILEVIL"
    assert r.b64_stop_at_pad(text) == b"MAIL"
    assert r.b64_pad_as_zero(text) == b"MAIL\x00\x00EVIL\x00\x00"
    assert r.b64_skip_junk(text) == base64.b64decode(b"TUFJTARVZJTA")  # shifted: garbage
    assert b"EVIL" not in r.b64_skip_junk(text)


def test_base64_readings_differ_on_junk_lines() -> None:
    text = b"TUFJ\r\nnot base64!\r\nTA==\r\n"
    assert r.b64_clean_lines(text) == b"MAIL"
    assert r.b64_line_prefixes(b"TUFJ!junk\r\nTA==\r\n") == b"MAIL"
    assert r.b64_per_line(b"TUFJTA\r\nRVZJ\r\n") == b"MAIEVI"  # ragged "TA" dropped
    assert r.b64_last_paragraph(b"junk junk\r\n\r\nTUFJTA==\r\n") == b"MAIL"
    assert r.b64(b"TUFJT") == b"MAI"  # a lone trailing character is trimmed


def test_qp_readings_differ_on_stray_equals() -> None:
    text = b"a=4Db=zc=5\r\nd=3dx"
    assert not r.is_plain_qp(text)
    assert r.is_plain_qp(b"a=4Db=\r\nc")
    assert r.qp_drop_stray_equals(text) == b"aMbzc5\r\nd=x"
    assert r.qp_drop_stray_pairs(text) == b"aMbc\r\nd=x"
    assert r.qp_single_digit(text) == b"aMb=zc\x05\r\nd=x"
    assert r.qp_upper_hex_only(text) == b"aMb\ndx"
    assert r.qp_drop_stray_equals(b"soft=  \r\nbreak") == b"softbreak"  # padded soft break


def test_readings_yields_each_distinct_decoding_once() -> None:
    assert list(r.readings(B64, "base64")) == [DATA]
    found = list(r.readings(b"TUFJTA==RVZJTA==", "base64"))
    assert len(found) == len(set(found))
    assert found[:2] == [r.b64_skip_junk(b"TUFJTA==RVZJTA=="), b"MAILEVIL"]
    assert b"MAIL" in found and b"MAIL\x00\x00EVIL\x00\x00" in found
    assert list(r.readings(b"", "quoted-printable")) == []


def test_uudecode_with_and_without_begin_lines() -> None:
    lines = b"".join(binascii.b2a_uu(DATA[i : i + 45]) for i in range(0, len(DATA), 45))
    assert r.uudecode(b"begin 644 eicar.com\n" + lines + b"`\nend\n") == DATA
    assert r.uudecode(lines) == DATA
    assert r.uu_line(b"end\n") == b""


def ybytes(data: bytes) -> bytes:
    out = bytearray()
    for byte in data:
        value = (byte + 42) & 0xFF
        if value in (0x00, 0x0A, 0x0D, 0x3D):
            out += bytes([0x3D, (value + 64) & 0xFF])
        else:
            out.append(value)
    return bytes(out)


def test_ydecode_a_yenc_body() -> None:
    data = bytes(range(256))
    text = b"=ybegin line=128 size=256 name=all.bin\r\n" + ybytes(data) + b"\r\n=yend size=256\r\n"
    assert r.ydecode(b"preamble\r\n" + text + b"trailer\r\n") == data


def binhex(name: bytes, fork: bytes) -> bytes:
    """A BinHex 4.0 body without run-length coding (no 0x90 in the data)."""
    header = (bytes([len(name)]) + name + b"\x00" + b"TEXTttxt" + b"\x00\x00"
              + len(fork).to_bytes(4, "big") + b"\x00" * 4 + b"\x00\x00")
    packed = header + fork + b"\x00\x00"
    packed += b"\x00" * (-len(packed) % 3)
    bits = int.from_bytes(packed, "big")
    digits = len(packed) * 8 // 6
    chars = bytes(r._HQX[(bits >> (6 * (digits - 1 - i))) & 63] for i in range(digits))
    return b"(This file must be converted with BinHex 4.0)\r\n:" + chars + b":\r\n"


def test_binhex_gives_the_data_fork() -> None:
    fork = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR"
    assert r.binhex_decode(binhex(b"eicar.com", fork)) == fork
    assert r.binhex_decode(b"no colon here") == b""
