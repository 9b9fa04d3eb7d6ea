"""The local safety check: the prompt blocklist, the nsfw policy (with an injected detector,
and the real one on a benign picture), and a room that may only make it stricter."""

from __future__ import annotations

import time

import pytest
from PIL import ImageChops, ImageStat

from generation.compliance import Compliance
from generation.compliance import safety
from generation.compliance.safety import Blocklist, stricter
from tests.helpers.chatting import bot_running, usage_rows
from tests.generation.compliance.test_compliance_copy import scene

BOT = "@imgbot:localhost"


class Flags:
    """A detector that flags every picture (or none), and counts what it saw."""

    name = "fake"

    def __init__(self, score: float = 0.97):
        self.score = score
        self.seen = 0

    def scores(self, image):
        self.seen += 1
        return {"nsfw": self.score}

    def flagged(self, scores):
        return scores["nsfw"] >= 0.8


def test_blocklist_words_are_whole_words_and_patterns_are_regexes():
    blocklist = Blocklist(words=["ass", "Banknote"], patterns=[r"forg(e|ed|ing)\b"])
    assert blocklist.blocked("a forged passport") == r"forg(e|ed|ing)\b"
    assert blocklist.blocked("a stack of BANKNOTES") is None  # a word, not a prefix
    assert blocklist.blocked("one banknote") == "Banknote"
    assert blocklist.blocked("a class photo") is None
    assert blocklist.blocked("a donkey, an ass") == "ass"
    assert not Blocklist() and Blocklist().blocked("anything") is None


@pytest.mark.parametrize(
    "prompt",
    [
        "ｎｕｄｅ portrait",  # fullwidth letters, which NFKC folds
        "nu\u200bde portrait",  # a zero-width space inside the word
        "nu\u00adde portrait",  # a soft hyphen inside it
        "NuDe portrait",  # another case
        "portrait, nude\u200bart",  # a zero-width space between two words
        "ＦＯＲＧＥＤ pass\u200dport",  # a pattern's match, dressed up the same way
    ],
)
def test_the_blocklist_sees_through_unicode_disguises(prompt):
    blocklist = Blocklist(words=["nude"], patterns=[r"forged passport"])
    assert blocklist.blocked(prompt) is not None


@pytest.mark.parametrize(
    "prompt",
    [
        "a nude\u034f woman",  # a combining grapheme joiner after the word
        "a \u034fnude woman",  # and before it
        "a nude\ufe0f woman",  # a variation selector after it
        "a nude\U000e0100 woman",  # a supplementary variation selector
        "a nude\u0336 woman",  # a combining overlay after it
        "a n\u0336u\u0336d\u0336e\u0336 woman",  # the word struck through
        "a nudé woman",  # an accent on one of its letters
        "a nude\u3164woman",  # a Hangul filler (a letter no one sees) between words
        "a nude\u180b woman",  # a Mongolian variation selector
        "a nude\U000e0041 woman",  # a tag character
        "a nude_woman",  # an underscore: a CLIP tokenizer splits there
    ],
)
def test_an_invisible_character_or_a_mark_hides_no_word(prompt):
    assert Blocklist(words=["nude"]).blocked(prompt) == "nude"


@pytest.mark.parametrize(
    "prompt",
    ["kill\u034f him", "kill\ufe0f him", "kill\u0336 him", "\u034fkill him", "k\u0336ill him"],
)
def test_an_invisible_character_or_a_mark_hides_no_pattern_match(prompt):
    assert Blocklist(patterns=[r"\bkill\b"]).blocked(prompt) == r"\bkill\b"


def test_words_stay_whole_words_with_marks_taken_off():
    blocklist = Blocklist(words=["nude", "cafe"])
    assert blocklist.blocked("a nudibranch") is None
    assert blocklist.blocked("a nudé\u0336branch") is None  # marks make no word boundary
    assert blocklist.blocked("a quiet kitchen") is None
    # Failing closed on accents: a blocked "cafe" refuses "café" too, and a blocked
    # "café" the plain "cafe" (a text encoder may read either as the other).
    assert blocklist.blocked("un café") == "cafe"
    assert Blocklist(words=["café"]).blocked("a cafe") == "café"


@pytest.mark.parametrize(
    "prompt",
    ["a red  room", "a red\nroom", "a red \u200b room", "a red\u00a0\u2003room", "a RED\troom"],
)
def test_white_space_inside_a_phrase_hides_nothing(prompt):
    # A tokenizer splits on white space, however much there is: the model reads "red room".
    assert Blocklist(words=["red room"]).blocked(prompt) == "red room"
    assert Blocklist(words=["red  room"]).blocked(prompt) == "red  room"  # the list's too
    assert Blocklist(patterns=[r"red room"]).blocked(prompt) == "red room"


def test_the_operators_words_are_normalised_too():
    # A list written with a fullwidth or soft-hyphenated word still matches the plain one.
    assert Blocklist(words=["ｎｕｄｅ"]).blocked("a nude") == "ｎｕｄｅ"
    assert Blocklist(words=["ban\u00adknote"]).blocked("a BANKNOTE") == "ban\u00adknote"
    assert Blocklist(words=["nude"]).blocked("a nudibranch") is None  # still whole words


def test_a_pattern_that_backtracks_without_end_refuses_the_prompt_in_time(caplog):
    catastrophic = r"(a|aa)+$"  # exponential on "aaaa…!" for backtracking engines
    blocklist = Blocklist(patterns=[catastrophic], seconds=0.2)
    started = time.perf_counter()
    assert blocklist.blocked("a" * 60 + "!") == catastrophic  # fail closed
    assert time.perf_counter() - started < 2  # the first slow reading refuses it
    assert repr(catastrophic) in caplog.text and "refused" in caplog.text
    assert blocklist.blocked("a harbour at dawn") is None  # a quick one is answered


async def test_a_slow_pattern_does_not_stall_the_event_loop():
    import asyncio

    blocklist = Blocklist(patterns=[r"(a|aa)+$"], seconds=0.5)
    ticks = 0

    async def ticking():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(ticking())
    try:
        await asyncio.to_thread(blocklist.blocked, "a" * 60 + "!")  # as accepting.py does
    finally:
        ticker.cancel()
    assert ticks >= 20  # the loop kept running beside the half-second search


def test_stricter_never_loosens():
    assert stricter("off", "blur") == "blur"
    assert stricter("block", "blur") == "block"
    assert stricter("blur", None) == "blur"
    assert stricter(None, None) == "off"


def test_block_withholds_the_picture_and_logs_the_scores():
    detector = Flags()
    verdict = Compliance(nsfw="block", detector=detector).screen(scene(1))
    assert verdict.action == "block" and verdict.withheld
    assert "safety check flagged it (nsfw 0.97)" in verdict.reasons[0]
    assert verdict.record["nsfw"] == {
        "action": "block",
        "detector": "fake",
        "scores": {"nsfw": 0.97},
    }


def test_blur_sends_the_picture_blurred():
    image = scene(2)
    verdict = Compliance(nsfw="blur", detector=Flags()).screen(image)
    assert verdict.action == "blur" and verdict.image.size == image.size
    difference = ImageStat.Stat(ImageChops.difference(image, verdict.image)).mean
    assert sum(difference) / 3 > 10  # not the picture as made
    assert "blurred" in verdict.reasons[0]


def test_a_harmless_score_passes_and_off_checks_nothing():
    detector = Flags(score=0.1)
    verdict = Compliance(nsfw="block", detector=detector).screen(scene(3))
    assert verdict.action == "send" and verdict.record["nsfw"]["action"] == "pass"
    off = Flags()
    assert Compliance(nsfw="off", detector=off).screen(scene(3)).action == "send"
    assert off.seen == 0


def test_a_room_makes_it_stricter_never_looser():
    compliance = Compliance(nsfw="block", detector=Flags())
    assert compliance.screen(scene(4), room_nsfw="blur").action == "block"
    relaxed = Compliance(nsfw="off", detector=Flags())
    assert relaxed.screen(scene(4), room_nsfw="blur").action == "blur"
    assert relaxed.screen(scene(4), room_nsfw="block").action == "block"


def test_a_room_policy_without_its_detector_fails_closed(monkeypatch):
    def missing(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(safety, "detector", missing)
    verdict = Compliance(nsfw="off", detector_name="nudenet").screen(scene(5), room_nsfw="blur")
    assert verdict.action == "block" and "not installed" in verdict.reasons[0]


def test_the_blocklist_comes_first():
    detector = Flags()
    verdict = Compliance(nsfw="block", detector=detector, blocklist=Blocklist(["banknote"])).screen(
        scene(6), "a banknote"
    )
    assert verdict.action == "block" and verdict.record["blocklist"] == "banknote"
    assert detector.seen == 0


def test_the_real_detector_passes_a_benign_picture():
    detector = safety.detector("opennsfw")
    image = scene(7, 1024)
    verdict = Compliance(nsfw="block", detector=detector).screen(image)
    assert verdict.action == "send", verdict.record
    assert verdict.record["nsfw"]["scores"]["nsfw"] < 0.8
    started = time.perf_counter()
    detector.scores(image)
    assert time.perf_counter() - started < 0.5


# ---- in a room, against the real homeserver ------------------------------------------------


@pytest.mark.synapse
async def test_a_moderator_turns_the_check_on_for_a_room(make_settings, engine, alice, monkeypatch):
    detector = Flags()
    monkeypatch.setattr(safety, "detector", lambda name: detector)
    settings = make_settings()  # compliance.nsfw is off in the config
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        refused = await alice.send(room, "!img room set nsfw off")
        (no,) = await alice.wait_reply(room, refused, "m.notice")
        assert "never looser" in no["content"]["body"]
        before = await alice.send(room, "!img a beach --seed 1")
        await alice.wait_reply(room, before, "m.image")
        assert detector.seen == 0  # off: nothing checked

        blur = await alice.send(room, "!img room set nsfw blur")
        await alice.wait_reply(room, blur, "m.notice")
        two = await alice.send(room, "!img a beach --seed 2 --n 2")
        images = await alice.wait_reply(room, two, "m.image", count=2)
        notices = await alice.wait_reply(room, two, "m.notice", count=2)
        assert all("sent blurred" in n["content"]["body"] for n in notices)

        block = await alice.send(room, "!img room set nsfw block")
        await alice.wait_reply(room, block, "m.notice")
        blocked = await alice.send(room, "!img a beach --seed 3")
        (notice,) = await alice.wait_reply(room, blocked, "m.notice")
        after = await alice.send(room, "!img help")
        await alice.wait_reply(room, after, "m.notice")
    # The two blurred pictures came, but not their contact sheet (it would show them).
    assert len(images) == 2 and len(alice.replies(room, two, "m.image")) == 2
    assert "is not sent: the safety check flagged it (nsfw 0.97)" in notice["content"]["body"]
    assert alice.replies(room, blocked, "m.image") == []
    rows = {row["event_id"]: row for row in await usage_rows(settings)}
    assert '"action": "block"' in rows[blocked]["compliance"]
    assert '"nsfw": 0.97' in rows[blocked]["compliance"]
