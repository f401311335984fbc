"""Line numbers for key paths of a TOML file: tomllib keeps no positions, so scan the text.

Used only when a config is refused, to print `file:line: key.path: problem`.
"""

from __future__ import annotations

import contextlib
import re

from drivers.plugin import Loc
from drivers.wording import quote

__all__ = ["KeyLocator", "format_path"]


def format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END = re.compile(r"[,\]}\s#]")
_SIMPLE_LINE = re.compile(
    r"""([A-Za-z0-9_-]+)[ \t]*=[ \t]*"""
    r"""(?:"[^"\\\n]*"|'[^'\n]*'|[A-Za-z0-9_.:+-]+)"""
    r"""[ \t]*(?:#[^\n]*)?(?=\r?\n|$)"""
)


class KeyLocator:
    """Line numbers of keys, tables and array elements, from a scan of the TOML text.

    Not a second parser: it runs only on text tomllib accepted, and only follows the structure
    (headers, arrays of tables, dotted keys, inline tables and arrays spanning lines, strings
    that hide `#`, `[` or `=`) to remember where each key path starts.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[Loc, int] = {}
        self._text = text
        self._pos = 0
        self._line = 1
        # Arrays of tables seen so far: resolved path -> number of elements.
        self._aot: dict[Loc, int] = {}
        # A construct this scan does not follow stops it: the lines found so far are kept, and
        # problems after it fall back to their enclosing table, or line 1. Never a traceback.
        with contextlib.suppress(ValueError, IndexError):
            self._scan()

    # -- the scan -------------------------------------------------------------------------

    def _scan(self) -> None:
        table: Loc = ()
        text = self._text
        while self._pos < len(text):
            self._skip_space(newlines=True)
            if self._pos >= len(text):
                break
            char = text[self._pos]
            simple = _SIMPLE_LINE.match(text, self._pos)
            if simple is not None:  # fast path: `key = 1`, `key = "text"  # comment`
                self._put((*table, simple.group(1)), self._line)
                self._pos = simple.end()
            elif char == "#":
                self._skip_comment()
            elif char == "[":
                table = self._header()
            else:
                line = self._line
                parts = self._key()
                self._put_dotted(table, parts, line)
                self._skip_space()
                self._pos += 1  # "="
                self._value((*table, *parts))

    def _header(self) -> Loc:
        text = self._text
        line = self._line
        is_array = text.startswith("[[", self._pos)
        self._pos += 2 if is_array else 1
        parts = self._key()
        self._skip_space()
        self._pos += 2 if is_array else 1
        resolved: list[str | int] = []
        for i, part in enumerate(parts):
            resolved.append(part)
            last = i == len(parts) - 1
            count = self._aot.get(tuple(resolved))
            if count is not None and not (last and is_array):
                resolved.append(count - 1)  # a prefix naming an array of tables: its last element
        if is_array:
            index = self._aot.get(tuple(resolved), 0)
            self._aot[tuple(resolved)] = index + 1
            self._put(tuple(resolved), line)
            resolved.append(index)
        table = tuple(resolved)
        self._put(table, line)
        return table

    def _key(self) -> tuple[str, ...]:
        """A bare, quoted or dotted key; the position ends after it."""
        parts: list[str] = []
        text = self._text
        while True:
            self._skip_space()
            char = text[self._pos]
            if char in "\"'":
                parts.append(self._string())
            else:
                match = _BARE_KEY.match(text, self._pos)
                if match is None:
                    raise ValueError(f"KeyLocator: unexpected {quote(char)} at line {self._line}")
                parts.append(match.group())
                self._pos = match.end()
            self._skip_space()
            if self._pos < len(text) and text[self._pos] == ".":
                self._pos += 1
                continue
            return tuple(parts)

    def _value(self, loc: Loc) -> None:
        self._skip_space()
        text = self._text
        char = text[self._pos]
        if char == "[":
            self._pos += 1
            index = 0
            while True:
                self._skip_space(newlines=True, comments=True)
                if text[self._pos] == "]":
                    self._pos += 1
                    return
                if text[self._pos] == ",":
                    self._pos += 1
                    continue
                self._put((*loc, index), self._line)
                self._value((*loc, index))
                index += 1
        elif char == "{":
            self._pos += 1
            while True:
                self._skip_space(newlines=True, comments=True)
                if text[self._pos] == "}":
                    self._pos += 1
                    return
                if text[self._pos] == ",":
                    self._pos += 1
                    continue
                line = self._line
                parts = self._key()
                self._put_dotted(loc, parts, line)
                self._skip_space()
                self._pos += 1  # "="
                self._value((*loc, *parts))
        elif char in "\"'":
            self._string()
        else:
            match = _SCALAR_END.search(text, self._pos)
            end = match.start() if match else len(text)
            if end == self._pos:  # not a value where one must be: the scan has lost its way
                raise ValueError(f"KeyLocator: no value at line {self._line}")
            self._pos = end

    def _string(self) -> str:
        """Read a basic, literal or multi-line string; return its raw content (keys only)."""
        text = self._text
        quote = text[self._pos]
        if text.startswith(quote * 3, self._pos):
            end = self._pos + 3
            while True:
                end = text.index(quote * 3, end)
                if quote == '"' and _escaped(text, end):
                    end += 1
                    continue
                break
            # A closing delimiter may have up to two more quotes before it ends.
            while text.startswith(quote, end + 3):
                end += 1
            content = text[self._pos + 3 : end]
            self._line += content.count("\n")
            self._pos = end + 3
            return content
        end = self._pos + 1
        while True:
            end = text.index(quote, end)
            if quote == '"' and _escaped(text, end):
                end += 1
                continue
            break
        content = text[self._pos + 1 : end]
        self._pos = end + 1
        return content

    def _skip_space(self, newlines: bool = False, comments: bool = False) -> None:
        text = self._text
        while self._pos < len(text):
            char = text[self._pos]
            if char in " \t\r":
                self._pos += 1
            elif char == "\n" and newlines:
                self._pos += 1
                self._line += 1
            elif char == "#" and comments:
                self._skip_comment()
            else:
                return

    def _skip_comment(self) -> None:
        end = self._text.find("\n", self._pos)
        self._pos = len(self._text) if end < 0 else end

    def _put_dotted(self, table: Loc, parts: tuple[str, ...], line: int) -> None:
        """`site.name = ...` also places the `site` table it creates on that line."""
        for end in range(1, len(parts) + 1):
            self._put((*table, *parts[:end]), line)

    def _put(self, loc: Loc, line: int) -> None:
        self._lines.setdefault(loc, line)

    # -- lookups --------------------------------------------------------------------------

    @property
    def lines(self) -> dict[str, int]:
        """Every key path found, as `devices[0].points[1].name`, with its line."""
        return {format_path(loc): line for loc, line in self._lines.items()}

    def line_of(self, loc: Loc) -> int | None:
        """The line of the key, else of the nearest enclosing key or table that has one."""
        for end in range(len(loc), 0, -1):
            found = self._lines.get(tuple(loc[:end]))
            if found is not None:
                return found
        return None


def _escaped(text: str, index: int) -> bool:
    """Whether the character at `index` is escaped by an odd run of backslashes."""
    count = 0
    while index - count - 1 >= 0 and text[index - count - 1] == "\\":
        count += 1
    return count % 2 == 1


# Union branches pydantic names in error locations ("function-after[...]", "literal['auto']",
# "float", "tagged-union[...]"): never a key of the file.
