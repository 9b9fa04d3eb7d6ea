"""Replies that render two ways: what a person typed stays literal text in both."""

from __future__ import annotations

import pytest

from bot.chat.language.commands import UsageError
from bot.chat.language.rich import RichText, bold, bullets, code, lines, reason, rich

TYPED = [
    "<b>bold</b>",
    "**not bold**",
    "`not code`",
    "<script>alert(1)</script>",
    "a & b <i>",
    "<a href='https://x'>link</a>",
]


@pytest.mark.parametrize("typed", TYPED)
def test_what_a_person_typed_is_escaped_in_html_and_literal_in_the_plain_body(typed):
    text = rich("Drawing {prompt!r} with `--style {style}`.", prompt=typed, style=typed)
    assert text.plain() == f"Drawing {typed!r} with `--style {typed}`."
    markup = text.html()
    assert "<b>" not in markup and "<script" not in markup and "<a " not in markup
    assert markup.count("<code>") == 1  # the template's, not one from the value
    escaped = typed.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert escaped in markup


def test_a_template_marks_code_and_bold_and_keeps_format_specs():
    text = rich("**{n:,} jobs** in line; `cancel` takes {what}.", n=12345, what="nothing")
    assert text.plain() == "12,345 jobs in line; `cancel` takes nothing."
    assert text.html() == "<b>12,345 jobs</b> in line; <code>cancel</code> takes nothing."
    # asterisks inside a code span are the command's
    assert rich("`a**b`").html() == "<code>a**b</code>"
    with pytest.raises(ValueError, match="unclosed"):
        rich("`open")


def test_a_rich_value_is_put_in_as_it_is_and_str_pieces_as_text():
    inner = code("!img queue")
    text = rich("See {}.", inner) + " <then>" + bold("now")
    assert text.plain() == "See `!img queue`. <then>now"
    assert text.html() == "See <code>!img queue</code>. &lt;then&gt;<b>now</b>"
    assert str(text) == text.plain()
    assert rich("a {x}", x="b") == RichText(("a b",))  # equal however it was put together


def test_lines_and_a_list_render_as_lines_and_as_ul():
    text = lines("Styles:", bullets([code("photo"), "oil <painting>"]), "Last line")
    assert text.plain() == "Styles:\n• `photo`\n• oil <painting>\nLast line"
    assert text.html() == (
        "Styles:<ul><li><code>photo</code></li><li>oil &lt;painting&gt;</li></ul>Last line"
    )
    assert lines("a", "b\nc").html() == "a<br>b<br>c"


def test_a_usage_error_takes_a_str_or_rich_text_and_its_message_is_plain():
    assert UsageError("plain <text>").text.html() == "plain &lt;text&gt;"
    refusal = UsageError(rich("Write `room set KEY VALUE`."))
    assert refusal.message == "Write `room set KEY VALUE`."
    assert refusal.text.html() == "Write <code>room set KEY VALUE</code>."


def test_reason_keeps_the_spans_of_a_rich_exception():
    assert reason(ValueError(rich("`--seed` takes a number"))).html() == (
        "<code>--seed</code> takes a number"
    )
    assert reason(ValueError("a <plain> one")).html() == "a &lt;plain&gt; one"
    assert str(ValueError(rich("`x`"))) == "`x`"
