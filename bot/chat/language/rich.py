"""Replies that render two ways: a plain `body`, and the `formatted_body` (the HTML subset
that Matrix clients show, `org.matrix.custom.html`) beside it.

Our own texts are built in code, never parsed from Markdown, so that what a person typed (a
prompt, a style's or a room default's value, a user ID, an error quoting their input) is
always literal text: HTML-escaped in the formatted body, and never taken for markup in
either. The one bit of parsing is `rich`'s template, which is ours: backticks in it mark a
code span and `**` bold, while the values put into its `{}` fields stay literal.

The plain body reads as the Markdown-ish text Element users see elsewhere: code spans keep
their backticks (commands stand out, and can be copied without them), bold is left bare (a
client without HTML shows the words, not asterisks), list items start with "• ".
"""

from __future__ import annotations

import html as html_escaping
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Span:
    """Inline text shown a way of its own: a command (code) or the thing that matters."""

    kind: Literal["code", "b"]
    inner: RichText


@dataclass(frozen=True)
class Items:
    """A bulleted list; a block, on lines of its own."""

    items: tuple[RichText, ...]


@dataclass(frozen=True)
class Break:
    """The end of a line."""


Piece = str | Span | Items | Break  # a str is literal text


@dataclass(frozen=True)
class RichText:
    """A reply as pieces; `plain()` and `html()` render it. Add RichTexts and strs with +
    (a str is literal text); str() is the plain body, so that a RichText in an exception
    or a log reads as the plain text does."""

    pieces: tuple[Piece, ...] = ()

    def __post_init__(self) -> None:
        # Neighbouring literal pieces as one, so that equal texts compare equal however
        # they were put together.
        merged: list[Piece] = []
        for piece in self.pieces:
            if piece == "":
                continue
            if isinstance(piece, str) and merged and isinstance(merged[-1], str):
                merged[-1] += piece
            else:
                merged.append(piece)
        object.__setattr__(self, "pieces", tuple(merged))

    def __add__(self, other: RichText | str) -> RichText:
        return RichText(self.pieces + as_rich(other).pieces)

    def __radd__(self, other: str) -> RichText:
        return as_rich(other) + self

    def __bool__(self) -> bool:
        return bool(self.pieces)

    def __str__(self) -> str:
        return self.plain()

    def join(self, parts: Iterable[RichText | str]) -> RichText:
        """The parts with this between them, as str.join."""
        joined: list[Piece] = []
        for i, part in enumerate(parts):
            if i:
                joined.extend(self.pieces)
            joined.extend(as_rich(part).pieces)
        return RichText(tuple(joined))

    def rstrip(self, chars: str) -> RichText:
        """Without the trailing `chars` of its last literal piece (a sentence's full stop,
        before one is added)."""
        if self.pieces and isinstance(self.pieces[-1], str):
            return RichText(self.pieces[:-1] + (self.pieces[-1].rstrip(chars),))
        return self

    def plain(self) -> str:
        out: list[str] = []
        for i, piece in enumerate(self.pieces):
            if isinstance(piece, str):
                out.append(piece)
            elif isinstance(piece, Break):
                out.append("\n")
            elif isinstance(piece, Span):
                inner = piece.inner.plain()
                out.append(f"`{inner}`" if piece.kind == "code" else inner)
            else:  # a list sits on lines of its own
                if out and not _after_break(self.pieces, i):
                    out.append("\n")
                out.append("\n".join(f"• {item.plain()}" for item in piece.items))
                if not _before_break(self.pieces, i):
                    out.append("\n")
        return "".join(out).rstrip("\n")

    def html(self) -> str:
        out: list[str] = []
        for i, piece in enumerate(self.pieces):
            if isinstance(piece, str):
                out.append(_escape(piece))
            elif isinstance(piece, Break):
                # A list is a block already: a break beside it would add an empty line.
                beside = [self.pieces[j] for j in (i - 1, i + 1) if 0 <= j < len(self.pieces)]
                if not any(isinstance(p, Items) for p in beside):
                    out.append("<br>")
            elif isinstance(piece, Span):
                out.append(f"<{piece.kind}>{piece.inner.html()}</{piece.kind}>")
            else:
                out.append("<ul>" + "".join(f"<li>{i.html()}</li>" for i in piece.items) + "</ul>")
        return "".join(out)


def _after_break(pieces: tuple[Piece, ...], i: int) -> bool:
    return i == 0 or isinstance(pieces[i - 1], Break)


def _before_break(pieces: tuple[Piece, ...], i: int) -> bool:
    return i == len(pieces) - 1 or isinstance(pieces[i + 1], Break)


def _escape(text: str) -> str:
    # Quotes need no escaping outside attributes; a newline in literal text stays one.
    return html_escaping.escape(text, quote=False).replace("\n", "<br>")


def as_rich(text: RichText | str) -> RichText:
    """A str as literal text (escaped in HTML, never markup); a RichText as it is."""
    if isinstance(text, RichText):
        return text
    return RichText((text,) if text else ())


def code(text: RichText | str) -> RichText:
    """A command or an option, as people type it."""
    return RichText((Span("code", as_rich(text)),))


def bold(text: RichText | str) -> RichText:
    """The one thing in a reply that matters most."""
    return RichText((Span("b", as_rich(text)),))


def lines(*rows: RichText | str) -> RichText:
    """Rows on lines of their own (a list among them is a block of its own)."""
    return RichText((Break(),)).join(rows)


def bullets(items: Iterable[RichText | str]) -> RichText:
    return RichText((Items(tuple(as_rich(item) for item in items)),))


def reason(exc: BaseException) -> RichText:
    """What an exception says, as it was written: a ValueError raised with a RichText keeps
    its code spans, any other is literal text."""
    said = exc.args[0] if len(exc.args) == 1 else None
    return said if isinstance(said, RichText) else as_rich(str(exc))


_FORMATTER = string.Formatter()


def rich(template: str, /, *args: Any, **values: Any) -> RichText:
    """Text from a template of ours, as str.format takes it: `backticks` mark a code span
    and **asterisks** bold; each {field} is a value put in as literal text, with its
    conversion and format spec (`{name!r}`, `{count:,}`), or a RichText as it is. A value
    is never read for backticks or asterisks: only the template's own text is."""
    pieces: list[Piece] = []
    opened: list[tuple[str, list[Piece]]] = []  # the spans still open, outermost first
    auto = 0

    def put(piece: Piece | RichText) -> None:
        target = opened[-1][1] if opened else pieces
        if isinstance(piece, RichText):
            target.extend(piece.pieces)
        elif piece != "":
            target.append(piece)

    def toggle(kind: Literal["code", "b"]) -> None:
        if opened and opened[-1][0] == kind:
            _, inner = opened.pop()
            put(Span(kind, RichText(tuple(inner))))
        else:
            opened.append((kind, []))

    for literal, field, spec, conversion in _FORMATTER.parse(template):
        at = 0
        while at < len(literal):
            in_code = bool(opened) and opened[-1][0] == "code"
            if literal[at] == "`":
                toggle("code")
                at += 1
            elif not in_code and literal.startswith("**", at):
                toggle("b")
                at += 2
            else:  # up to the next mark (inside a code span, only its end is one)
                marks = ("`",) if in_code else ("`", "**")
                ends = [e for e in (literal.find(mark, at) for mark in marks) if e >= 0]
                end = min(ends) if ends else len(literal)
                put(literal[at:end])
                at = end
        if field is None:
            continue
        if field == "":
            value, auto = args[auto], auto + 1
        elif field.isdigit():
            value = args[int(field)]
        else:
            value = values[field]
        if isinstance(value, RichText):
            put(value)
            continue
        if conversion:
            value = _FORMATTER.convert_field(value, conversion)
        put(format(value, spec or ""))
    if opened:
        raise ValueError(f"unclosed {opened[-1][0]} span in {template!r}")
    return RichText(tuple(pieces))
