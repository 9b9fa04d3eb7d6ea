"""Replies people read at a glance (issue 32): every text reply carries an HTML formatted
body with code spans for commands beside its plain body, what a person typed is escaped in
it, and `help` fits a phone screen. Through the bot's own intake with the recording fake
client of test_first_word_handler."""

from __future__ import annotations

import pytest
from generation.compliance import Verdict
from generation.job import Job

from bot.chat.jobs.screening import notice_text
from bot.chat.jobs.status import running_text, waiting_text
from bot.chat.language import rooms
from bot.chat.language.help import short_help
from bot.chat.language.resolve import Catalogue, RoomDefaults
from bot.chat.language.rich import as_rich
from bot.config import GenerationSettings, LimitSettings, QuotaSettings
from bot.matrix.edits import edit_content
from tests.chat.test_first_word_handler import ADMIN, PERSON, RecordingQueue, bot, say  # noqa: F401

HTML = "org.matrix.custom.html"
TYPED = "<b>bold</b> **strong** `tick` <script>alert(1)</script>"


class QueueWithPlaces(RecordingQueue):
    """What `queue`, `cancel`, `pause` and `resume` ask of the queue: nothing in it."""

    seconds_per_cost = None
    depth = 0

    def places(self):
        return []

    def cancel(self, which):
        return []

    def pause(self):
        self.paused = True

    def resume(self):
        self.paused = False


@pytest.fixture
def queue_bot(bot):  # noqa: F811
    bot.replies.queue = QueueWithPlaces()
    return bot


async def reply(chat_bot, body: str, sender: str = PERSON) -> dict:
    """The one notice a command gets."""
    before = len(chat_bot.client.sent)
    sent = await say(chat_bot, body, sender=sender)
    assert [c["msgtype"] for c in sent[before:]] == ["m.notice"], sent[before:]
    return sent[-1]


@pytest.mark.parametrize(
    "command, sender, code",
    [
        ("!img help", PERSON, "<code>!img &lt;prompt&gt;</code>"),
        ("!img help options", PERSON, "<code>--seed N</code>"),
        ("!img help rooms", PERSON, "<code>!img room set KEY VALUE</code>"),
        ("!img help admin", ADMIN, "<code>!img pause</code>"),
        ("!img styles", PERSON, "<code>--style NAME</code>"),
        ("!img models", PERSON, "<code>--model NAME</code>"),
        ("!img queue", PERSON, "<b>The queue: 0 running, 0 waiting.</b>"),
        ("!img cancel", PERSON, "You have no queued jobs to cancel."),
        ("!img room", PERSON, "<code>room set KEY VALUE</code>"),
        ("!img room set steps 3", ADMIN, "<code>room</code> shows all its defaults"),
        ("!img room reset", ADMIN, "<b>the bot's again</b>"),
        ("!img pause", PERSON, "<code>matrix.admins</code>"),
        ("!img pause", ADMIN, "<code>resume</code>"),
        ("!img resume", ADMIN, "<b>The queue runs again</b>"),
        ("!img a cat --seed many", PERSON, "<code>--seed</code> takes a whole number"),
        ("!img a cat --frobnicate", PERSON, "<code>help options</code>"),
        ("!img room set colour red", PERSON, "<code>room set KEY VALUE</code>"),
        ("!img again", PERSON, "<code>!img again</code>"),
        ("!img help colours", PERSON, "<code>options</code>, <code>rooms</code>"),
    ],
)
async def test_each_text_reply_has_a_formatted_body_beside_its_plain_one(
    queue_bot, command, sender, code
):
    content = await reply(queue_bot, command, sender)
    assert content["format"] == HTML
    assert code in content["formatted_body"]
    body = content["body"]
    assert "<code>" not in body and "<b>" not in body and "<br>" not in body
    if "<code>" in code:  # the plain body keeps the command in backticks
        assert "`" in body


async def test_help_is_short_and_names_its_topics(queue_bot):
    content = await reply(queue_bot, "!img help")
    body = content["body"]
    assert len(body.splitlines()) <= 15
    assert "`!img help options`" in body and "`!img help rooms`" in body
    assert "help admin" not in body  # for admins only
    assert "`!img help admin`" in (await reply(queue_bot, "!img help", ADMIN))["body"]
    assert "`--seed N`" in (await reply(queue_bot, "!img help options"))["body"]


async def test_help_on_an_unknown_topic_is_one_notice_naming_the_topics(queue_bot):
    content = await reply(queue_bot, "!img help colours")
    for topic in ("options", "rooms", "admin"):
        assert f"`{topic}`" in content["body"]
        assert f"<code>{topic}</code>" in content["formatted_body"]
    assert queue_bot.queue.jobs == []


@pytest.mark.parametrize(
    "command",
    [f"!img help {TYPED}", f"!img room set model {TYPED}", f"!img room set style {TYPED}"],
)
async def test_what_a_person_typed_is_escaped_in_the_formatted_body(queue_bot, command):
    content = await reply(queue_bot, command, ADMIN)
    markup = content["formatted_body"]
    for tag in ("<b>bold", "<script>", "<strong>", "<code>tick"):
        assert tag not in markup
    for escaped in ("&lt;b&gt;bold&lt;/b&gt;", "**strong**", "`tick`", "&lt;script&gt;"):
        assert escaped in markup
    for typed in ("<b>bold</b>", "**strong**", "`tick`", "<script>"):
        assert typed in content["body"]  # literal, as typed (a style's spaces become -)


def test_help_fits_a_phone_screen_with_room_for_the_lines_to_come():
    # The fullest help there is: editing, an admin, quotas, a room with its own defaults.
    catalogue = Catalogue("flux", {"flux": (1024, 1024)})
    room = RoomDefaults(
        style="photo", width=768, height=512, steps=8, guidance=4.0, negative="blur", enhance=True
    )
    here = rooms.in_effect(room, GenerationSettings(), catalogue)
    text = short_help(
        "!img",
        LimitSettings(),
        QuotaSettings(pictures_per_hour=5, pictures_per_day=20),
        here,
        editing=True,
        admin=True,
    )
    assert len(text.plain().splitlines()) <= 15
    assert text.html().count("<li>") == 5


def test_status_and_compliance_notices_are_formatted_too():
    job = Job(prompt=TYPED, seed=1, steps=30, width=64, height=64)
    for words in (waiting_text(2, 14.2, paused=False), running_text(job, None, 3.0)):
        edit = edit_content("$status", as_rich(words))
        assert edit["m.new_content"]["format"] == HTML
        assert edit["m.new_content"]["formatted_body"] == as_rich(words).html()
        assert edit["formatted_body"] == "* " + edit["m.new_content"]["formatted_body"]
    verdict = Verdict("block", None, [f"a blocked term ({TYPED})"], {})
    notice = notice_text(verdict, "seed 1")
    assert "<b>is not sent</b>" in notice.html() and "&lt;script&gt;" in notice.html()
    assert (
        notice.plain()
        == f"The picture (seed 1) was made but is not sent: a blocked term ({TYPED})."
    )
