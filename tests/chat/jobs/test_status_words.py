"""The status notice's rules and words, without a homeserver."""

from __future__ import annotations

from generation.job import Job
from generation.scheduling.progress import Progress

from bot.chat.jobs.status import (
    nearly_done,
    running_text,
    told_at_once,
    waiting_text,
    worth_editing,
)


def test_a_long_or_paused_wait_is_told_at_once_and_a_short_one_is_not():
    assert told_at_once(paused=True, ahead=0, eta=None, interval=3)
    assert told_at_once(paused=False, ahead=2, eta=14.0, interval=3)
    assert told_at_once(paused=False, ahead=1, eta=3.0, interval=3)
    # Waits shorter than the interval, or not known yet, look like a quick job.
    assert not told_at_once(paused=False, ahead=3, eta=0.8, interval=3)
    assert not told_at_once(paused=False, ahead=3, eta=None, interval=3)
    assert not told_at_once(paused=False, ahead=0, eta=0.0, interval=3)


def test_the_words_of_a_wait_and_of_a_run():
    assert waiting_text(2, 14.2, paused=False) == "Queued: 2 jobs ahead of yours, about 14 s."
    assert waiting_text(1, None, paused=True).startswith("Queued: the queue is paused")
    job = Job(prompt="a lighthouse", seed=1, steps=30, width=64, height=64)
    text = running_text(job, Progress(12, 30), elapsed=4.0)
    assert text == "Making your picture: step 12 of 30, about 6 s left."


def test_with_no_worker_up_the_wait_says_so():
    text = waiting_text(3, None, paused=False, no_worker=True)
    assert text == (
        "Queued: no GPU worker is available right now; 3 jobs ahead of yours. "
        "It starts when one is back."
    )


def test_a_job_far_back_is_edited_every_third_interval_and_near_the_front_each_move():
    far, farther = ("waiting", 12, False, True), ("waiting", 15, False, True)
    assert not worth_editing(far, far, since=60, interval=3)  # nothing new
    assert not worth_editing(farther, far, since=3, interval=3)
    assert worth_editing(farther, far, since=9, interval=3)
    near = ("waiting", 2, False, True)
    assert worth_editing(("waiting", 3, False, True), near, since=3, interval=3)
    # A pause, a worker back, or the start is said at the next interval whatever the place.
    assert worth_editing(far, ("waiting", 11, True, True), since=3, interval=3)
    assert worth_editing(far, "Making your picture: step 1 of 8.", since=3, interval=3)


def test_a_running_job_about_to_end_is_not_told_yet():
    # 2 of 2 steps after 1.2 s: only the decoding is left.
    assert nearly_done(Progress(2, 2), elapsed=1.2, interval=3)
    # 1 of 2 after 1 s: about 1 s left, under half the interval.
    assert nearly_done(Progress(1, 2), elapsed=1.0, interval=3)
    # 12 of 30 after 4 s: about 6 s left; and no progress yet says nothing.
    assert not nearly_done(Progress(12, 30), elapsed=4.0, interval=3)
    assert not nearly_done(None, elapsed=3.0, interval=3)
    assert not nearly_done(Progress(0, 30), elapsed=3.0, interval=3)
