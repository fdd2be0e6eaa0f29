"""Attachment names from MIME headers, read as leniently as any mail client would read them.

A gateway must see every name some client could show, so each header yields all readings:
the standard one (RFC 2045/2231/2047 as Python's email package applies them), and the raw,
partly decoded and out-of-order readings that evasion mails rely on (see the corpus
noxxi-mime-is-broken). Matching runs over the union.
"""

from __future__ import annotations

import contextlib
import re
import urllib.parse
from collections.abc import Iterable
from email import message_from_bytes, policy
from email.header import decode_header, make_header

from scanmail.mime.part import LimitExceeded

NAME_HEADERS = ("content-type", "content-disposition")
NAME_KEYS = ("name", "filename")
MAX_NAME = 1024
MAX_NAME_PARAMS = 64  # "name" in one part's headers more often than this: cannot be checked
MAX_VALUE = 16 << 10  # header values past this are read by their two ends

# key[*N][*]=value: a lenient reading of one MIME parameter (RFC 2045 section 5.1, RFC 2231).
_PARAM = re.compile(  # possessive: no backtracking on hostile header values
    r"""(?<![^\s;])(?P<key>[^\s=;"'()*]++)\s*+(?:\*\s*+(?P<num>\d++))?+\s*+(?P<ext>\*)?+\s*+=
        \s*+(?P<value>"(?P<dq>(?:[^"\\]|\\.)*+)"?+|(?P<tok>(?:\\.|[^;\s\\])*+\\?+))""",
    re.VERBOSE | re.DOTALL,
)
_COMMENT_OR_SPACE = re.compile(rb"\((?:[^()\\]|\\.)*\)|\s+")
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def _decode_words(text: str) -> str:
    """Decode RFC 2047 encoded-words wherever they stand, even inside quotes (clients do)."""
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (ValueError, LookupError, UnicodeError, AssertionError):
        return _ENCODED_WORD.sub(lambda m: _decode_words_loose(m.group(0)), text)


def _decode_words_loose(word: str) -> str:
    try:
        return str(make_header(decode_header(word)))
    except (ValueError, LookupError, UnicodeError, AssertionError):
        return word


def _percent(value: str, charset: str) -> str:
    try:
        return urllib.parse.unquote(value, encoding=charset or "utf-8", errors="replace")
    except LookupError:
        return urllib.parse.unquote(value, encoding="latin-1")


def _rfc2231(value: str) -> str:
    """Decode charset'lang'percent-encoded text; leave anything else as it is."""
    charset, sep, rest = value.partition("'")
    if sep and "'" in rest:
        _lang, _, encoded = rest.partition("'")
        return _percent(encoded, charset)
    return _percent(value, "utf-8") if "%" in value else value


def raw_readings(values: Iterable[str], keys: tuple[str, ...] = NAME_KEYS) -> set[str]:
    """Every value a lenient client could take for keys from a part's Content-* headers."""
    found: set[str] = set()
    segments: dict[str, list[tuple[int, bool, str]]] = {}
    for value in values:
        value = bounded(value, MAX_VALUE)
        for text in {value, _COMMENT.sub("", value)}:
            for match in _PARAM.finditer(text):
                key = match.group("key").lower().lstrip(";")
                if not key.endswith(keys):
                    continue
                raw = match.group("dq")
                if raw is None:
                    raw = match.group("tok") or ""
                    found.add(raw)
                raw = re.sub(r"\\(.)", r"\1", raw)
                # A client that does not split parameters takes the rest of the line.
                found.add(text[match.start("value") :])
                num, ext = match.group("num"), bool(match.group("ext"))
                if num is not None:
                    # Continuations may be spread over duplicated headers (RFC 2231 section 3).
                    base = max((k for k in keys if key.endswith(k)), key=len)
                    segments.setdefault(base, []).append((int(num), ext, raw))
                found.add(raw)
                found.add(_decode_words(raw))
                if ext or "%" in raw:
                    found.add(_rfc2231(raw))
    for parts in segments.values():
        for ordered in (sorted(parts, key=lambda p: p[0]), parts):
            joined_raw = "".join(raw for _, _, raw in ordered)
            found.add(joined_raw)
            found.add(_decode_words(joined_raw))
            if ordered and ordered[0][1]:
                charset = ordered[0][2].split("'", 1)[0] if ordered[0][2].count("'") >= 2 else ""
                pieces = []
                for index, (_, ext, raw) in enumerate(ordered):
                    if index == 0 and raw.count("'") >= 2:
                        raw = raw.split("'", 2)[2]
                    pieces.append(_percent(raw, charset) if ext else raw)
                found.add("".join(pieces))
    return found


def standard_readings(header_block: bytes) -> set[str]:
    """The names Python's email package reads from a part's headers (all of them)."""
    found: set[str] = set()
    if len(header_block) > 4 * MAX_VALUE:  # only the Content-* headers matter here
        header_block = b"".join(
            f"{name}: {bounded(value, MAX_VALUE)}\n".encode("utf-8", "surrogateescape")
            for name, value in header_values(header_block) if name in NAME_HEADERS
        )
    try:
        part = message_from_bytes(header_block + b"\n\n", policy=policy.compat32)
        for header in NAME_HEADERS:
            for value in part.get_all(header) or ():
                value = bounded(str(value), MAX_VALUE)
                single = message_from_bytes(
                    f"{header}: {value}\n\n".encode("utf-8", "surrogateescape"),
                    policy=policy.compat32,
                )
                for key in NAME_KEYS:
                    param = single.get_param(key, header=header)
                    if param is None:
                        continue
                    if isinstance(param, tuple):
                        from email.utils import collapse_rfc2231_value

                        text = collapse_rfc2231_value(param)
                    else:
                        text = str(param)
                    found.add(text)
                    found.add(_decode_words(text))
    except Exception:  # noqa: BLE001 - a parser bug must not stop the other readings
        pass
    return found


def header_values(header_block: bytes) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value) for each header line; lenient about line ends."""
    text = header_block.decode("utf-8", "surrogateescape")
    pieces: list[tuple[str, list[str]]] = []  # joined once at the end: linear (issue 14)
    for line in re.split(r"\r?\n|\r", text):
        if line[:1] in (" ", "\t") and pieces:
            pieces[-1][1].append(line.strip())
            continue
        name, sep, value = line.partition(":")
        if sep and name.strip() and " " not in name.strip():
            pieces.append((name.strip().lower(), [value.strip()]))
    return [(name, " ".join(parts)) for name, parts in pieces]


def names_from_headers(header_block: bytes) -> list[str]:
    """Every attachment name a part's headers could be shown under, deduplicated, in order."""
    # No name or filename parameter anywhere, even with comments or folding inside the key.
    squeezed = _COMMENT_OR_SPACE.sub(b"", header_block.lower())
    if b"name" not in squeezed:
        return []
    if squeezed.count(b"name") > MAX_NAME_PARAMS:
        # Hundreds of names per part cost minutes and gigabytes (issue 14), and no mail
        # client shows them all: the message cannot be checked, never passed.
        raise LimitExceeded(f"more than {MAX_NAME_PARAMS} name parameters in one part")
    found = standard_readings(header_block)
    found |= raw_readings(
        value for name, value in header_values(header_block) if name.startswith("content-")
    )
    return _tidy(found)


def bounded(text: str, limit: int = MAX_NAME) -> str:
    """Text cut to a limit by dropping its middle: a name's extension is at its end."""
    if len(text) <= limit:
        return text
    return text[: limit // 2] + text[-(limit // 2) :]


def _variants(name: str) -> Iterable[str]:
    """A name as clients with other charset guesses would show it."""
    yield name
    if "\x00" in name:  # UTF-16 read as bytes
        yield name.replace("\x00", "")
    if any("\udc80" <= c <= "\udcff" for c in name):  # raw 8-bit bytes
        raw = name.encode("utf-8", "surrogateescape")
        yield raw.decode("utf-8", "replace")
        yield raw.decode("cp1252", "replace")
    elif any(c > "\u00ff" for c in name):  # UTF-16 guessed with the wrong byte order
        with contextlib.suppress(UnicodeError):
            yield name.encode("utf-16-le").decode("utf-16-be")


def _tidy(names: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    for name in names:
        for variant in _variants(bounded(name.strip().strip("\"'").strip())):
            if variant:
                seen.add(variant)
    return sorted(seen)
