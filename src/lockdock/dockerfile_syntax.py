"""Dockerfile syntax as BuildKit reads it, the one reader of Dockerfile instructions (pure).

``instruction_words(text)`` yields each instruction's words, with each character's offset in
the text (``pin`` rewrites references in place): lines continued with the escape character
(``\\``, or the ``# escape=`` parser directive's) are joined, blank and comment lines inside
a continuation skipped, and ``RUN``/``COPY``/``ADD`` heredoc bodies (``<<EOT`` ... ``EOT``)
are not instructions. ``image.dockerfile.instructions`` gives the same instructions as text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Word:
    """A word of an instruction (continuations joined), with each character's offset."""

    text: str
    offsets: tuple[int, ...]

    def tail(self, skip: int) -> Word:
        return Word(self.text[skip:], self.offsets[skip:])

    @property
    def in_place(self) -> bool:
        return self.offsets[-1] - self.offsets[0] == len(self.text) - 1


_DIRECTIVE = re.compile(r"#\s*([A-Za-z]+)\s*=\s*(\S+)\s*")
_HEREDOC = re.compile(r"\d*<<(-?)([\"']?)([^\s\"'<]+)\2")


def _escape_character(lines: list[str]) -> str:
    """The ``# escape=`` parser directive's character (directives come first)."""
    escape = "\\"
    for line in lines:
        match = _DIRECTIVE.fullmatch(line.strip())
        if match is None:
            break
        if match.group(1).lower() == "escape" and match.group(2) in ("\\", "`"):
            escape = match.group(2)
    return escape


def _after_heredocs(words: list[Word], lines: list[str], index: int) -> int:
    """The line after the heredoc bodies of a RUN/COPY/ADD starting at line ``index``.

    A ``<<WORD`` never closed is taken as no heredoc, so that no line goes unread."""
    keyword = words[1 if words[0].text.upper() == "ONBUILD" and len(words) > 1 else 0]
    if keyword.text.upper() not in ("RUN", "COPY", "ADD"):
        return index
    for word in words[1:]:
        match = _HEREDOC.fullmatch(word.text)
        if match is None:
            continue
        for end in range(index, len(lines)):
            line = lines[end].rstrip("\r\n")
            if (line.lstrip("\t") if match.group(1) else line) == match.group(3):
                index = end + 1
                break
    return index


def instruction_words(text: str) -> Iterator[list[Word]]:
    """Each instruction's words, continuation lines joined as BuildKit joins them."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    escape = _escape_character(lines)
    index = 0
    while index < len(lines):
        chars: list[str] = []
        offsets: list[int] = []
        while index < len(lines):
            stripped = lines[index].strip()
            index += 1
            if not stripped or stripped.startswith("#"):  # also skipped inside continuations
                continue
            body = lines[index - 1].rstrip("\r\n")
            continued = body.rstrip().endswith(escape)
            part = body.rstrip()[:-1] if continued else body
            chars.extend(part)
            offsets.extend(range(starts[index - 1], starts[index - 1] + len(part)))
            if not continued:
                break
        joined = "".join(chars)
        words = [Word(m.group(), tuple(offsets[m.start() : m.end()]))
                 for m in re.finditer(r"\S+", joined)]
        if words:
            yield words
            index = _after_heredocs(words, lines, index)
