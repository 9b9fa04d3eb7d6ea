"""Whom the bot believes: who invited it, and whose redaction cancels a job.

Invites are fed as a raw /sync body through nio's own parser (`SyncResponse.from_dict`), laid
out the way Synapse lays them out (rest/client/sync.py, `encode_invited`): first the stripped
state that the inviting server sent along with the invite, which it writes as it likes, then
the invite event itself, as the homeserver stored it (with an event ID and a timestamp). The
client is a recording fake; the normal invite path, with the real homeserver, is what every
test that calls `Chat.room_with` goes through.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from nio import JoinResponse, RoomGetStateResponse, SyncResponse

from bot.chat.bot import Bot
from bot.store import db as database
from bot.config import Settings
from bot.ops.tasks import TaskOwner
from tests.helpers.runners import StubRunner

BOT = "@imgbot:example.org"
ALICE = "@alice:example.org"  # in allowed_users (everyone on the bot's own server)
MOD = "@mod:example.org"
BOB = "@bob:example.org"
EVIL = "@x:evil.example"  # not allowed


class RecordingClient:
    """Joins, leaves and state reads, recorded; the rooms it is in, as nio keeps them."""

    user_id = BOT

    def __init__(self, rooms: int = 0, state: list[dict] | None = None):
        self.rooms = {f"!in{i}:example.org": object() for i in range(rooms)}
        self.state = state or []
        self.calls: list[tuple[str, str]] = []

    async def join(self, room_id):
        self.calls.append(("join", room_id))
        await asyncio.sleep(0)  # the other invites of the sync are handled meanwhile
        return JoinResponse(room_id)

    async def room_leave(self, room_id):
        self.calls.append(("leave", room_id))

    async def room_get_state(self, room_id):
        self.calls.append(("state", room_id))
        return RoomGetStateResponse(self.state, room_id)


RUNNER = StubRunner(name="m", models=["m"], native_size=lambda name="": (512, 512))


def make_bot(client, queue=None, **matrix) -> Bot:
    settings = Settings(matrix={"homeserver_url": "http://127.0.0.1:1", "user_id": BOT, **matrix})
    return Bot(
        client, settings, db=None, queue=queue or SimpleNamespace(runner=RUNNER), tasks=TaskOwner()
    )


def stripped(sender: str, **content) -> dict:
    """A member event for the bot as a remote server may put it in invite_room_state."""
    return {
        "type": "m.room.member",
        "state_key": BOT,
        "sender": sender,
        "content": {"membership": "invite", **content},
    }


def delivered(sender: str, **content) -> dict:
    """The invite event as the homeserver delivers it, last (its sender checked)."""
    return {
        **stripped(sender, **content),
        "event_id": "$invite",
        "origin_server_ts": 1,
        "unsigned": {"age": 1},
    }


def sync_with_invites(invites: dict[str, list[dict]], left: tuple[str, ...] = ()) -> SyncResponse:
    response = SyncResponse.from_dict(
        {
            "next_batch": "s1",
            "rooms": {
                "invite": {
                    room: {"invite_state": {"events": events}} for room, events in invites.items()
                },
                "join": {},
                "leave": {room: {"timeline": {"events": []}} for room in left},
            },
        }
    )
    assert isinstance(response, SyncResponse), response
    return response


async def synced(bot: Bot, response: SyncResponse) -> None:
    await (await bot.on_sync(response, first=False))


# ---- invites ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "real",
    [
        delivered(EVIL),
        # A content nio cannot read (a displayname that is not text) makes the real event a
        # BadEvent: the forged one before it must not be taken instead.
        delivered(EVIL, displayname=5),
    ],
)
async def test_an_allowed_inviter_claimed_by_the_stripped_state_is_not_believed(real):
    client = RecordingClient()
    bot = make_bot(client)
    forged = [
        {
            "type": "m.room.name",
            "state_key": "",
            "sender": ALICE,
            "content": {"name": "Alice's room"},
        },
        stripped(ALICE),
    ]
    await synced(bot, sync_with_invites({"!r:evil.example": [*forged, real]}))
    assert client.calls == [("leave", "!r:evil.example")]


async def test_the_delivered_invite_of_an_allowed_user_is_joined():
    # Whatever the stripped state says (a server may send none, or stale state).
    client = RecordingClient()
    bot = make_bot(client)
    await synced(
        bot,
        sync_with_invites(
            {
                "!a:example.org": [delivered(ALICE)],
                "!b:example.org": [stripped(EVIL), delivered(ALICE)],
            }
        ),
    )
    assert sorted(client.calls) == [("join", "!a:example.org"), ("join", "!b:example.org")]


async def test_no_invite_event_for_the_bot_invites_nobody():
    client = RecordingClient()
    bot = make_bot(client)
    await synced(
        bot,
        sync_with_invites(
            {
                "!a:example.org": [stripped(ALICE, membership="join")],
                "!b:example.org": [{**stripped(ALICE), "state_key": "@someone:example.org"}],
            }
        ),
    )
    assert sorted(client.calls) == [("leave", "!a:example.org"), ("leave", "!b:example.org")]


async def test_invites_over_max_rooms_are_declined_with_a_log_line(caplog):
    client = RecordingClient(rooms=1)
    bot = make_bot(client, max_rooms=3)
    # Five invites in one sync, handled at once: only two more rooms fit.
    await synced(
        bot, sync_with_invites({f"!new{i}:example.org": [delivered(ALICE)] for i in range(5)})
    )
    joined = [room for call, room in client.calls if call == "join"]
    left = [room for call, room in client.calls if call == "leave"]
    assert len(joined) == 2 and len(left) == 3
    assert "the bot is in 3 rooms and matrix.max_rooms is 3" in caplog.text
    # Once a sync shows the joined rooms, they are counted once, not twice.
    client.rooms.update(dict.fromkeys(joined))
    client.calls.clear()
    await synced(bot, sync_with_invites({"!later:example.org": [delivered(ALICE)]}))
    assert client.calls == [("leave", "!later:example.org")]
    # A room the bot leaves (or is kicked from) stays in nio's rooms: the sync says it left.
    client.calls.clear()
    await synced(
        bot, sync_with_invites({"!later:example.org": [delivered(ALICE)]}, left=(joined[0],))
    )
    assert client.calls == [("join", "!later:example.org")]


# ---- redactions -------------------------------------------------------------------------

ROOM = "!room:example.org"
COMMAND = "$command"


def power_levels(**users: int) -> list[dict]:
    return [
        {
            "type": "m.room.create",
            "state_key": "",
            "sender": ALICE,
            "content": {"room_version": "10"},
        },
        {
            "type": "m.room.power_levels",
            "state_key": "",
            "sender": ALICE,
            "content": {"users": {MOD: 50, **users}, "redact": 50},
        },
    ]


class CancellingQueue:
    runner = RUNNER

    def __init__(self):
        self.cancelled: list[object] = []

    def cancel(self, which) -> bool:
        self.cancelled.append(which)
        return True


def redaction(sender: str, room_version_11: bool = False) -> dict:
    where = (
        {"content": {"redacts": COMMAND}}
        if room_version_11
        else {"redacts": COMMAND, "content": {}}
    )
    return {"type": "m.room.redaction", "sender": sender, "event_id": "$redaction", **where}


async def redacted_by(sender: str, state: list[dict], room_version_11: bool = False):
    client = RecordingClient(state=state)
    queue = CancellingQueue()
    bot = make_bot(client, queue=queue)
    bot.pending.add(
        SimpleNamespace(id=1), SimpleNamespace(room_id=ROOM, sender=BOB, event_id=COMMAND)
    )
    await bot.on_event(ROOM, redaction(sender, room_version_11))
    return bool(queue.cancelled), client.calls


@pytest.mark.parametrize(
    "sender, state",
    [
        (EVIL, power_levels()),  # a remote server's redaction of Bob's command
        (ALICE, power_levels()),  # a member of the room without the power to redact
        (ALICE, power_levels(**{ALICE: 49})),
        (ALICE, []),  # the homeserver would not say: nobody's power
    ],
)
async def test_a_redaction_by_someone_else_leaves_the_job(sender, state):
    cancelled, calls = await redacted_by(sender, state)
    assert not cancelled
    assert calls == [("state", ROOM)]  # read from the homeserver, not nio's copy


@pytest.mark.parametrize(
    "sender, state, room_version_11",
    [
        (BOB, power_levels(), False),  # the owner: no power levels needed
        (BOB, power_levels(), True),
        (MOD, power_levels(), False),  # a moderator
        (EVIL, power_levels(**{EVIL: 100}), True),  # a remote user the room gave the power
    ],
)
async def test_the_owners_or_a_moderators_redaction_cancels_the_job(sender, state, room_version_11):
    cancelled, _ = await redacted_by(sender, state, room_version_11)
    assert cancelled


class RunningQueue(CancellingQueue):
    def cancel(self, which) -> bool:  # the job runs already: nothing to take out
        self.cancelled.append(which)
        return False


@pytest.mark.parametrize("command, withdrawn", [({}, True), ({"reaction": "🔁"}, False)])
async def test_a_running_job_is_withdrawn_for_a_command_redacted_not_a_reaction_taken_back(
    command, withdrawn
):
    """A redacted command's running job is made but not posted; a reaction taken back once
    its job runs changes nothing (the picture was asked for with one tap, and comes)."""
    bot = make_bot(RecordingClient(state=power_levels()), queue=RunningQueue())
    pending = bot.pending.add(
        SimpleNamespace(id=1),
        SimpleNamespace(room_id=ROOM, sender=BOB, event_id=COMMAND, command=command),
    )
    await bot.on_event(ROOM, redaction(BOB))
    assert pending.withdrawn is withdrawn


@pytest.mark.parametrize("where, cancelled", [(ROOM, True), ("!elsewhere:example.org", False)])
async def test_x_on_a_status_notice_cancels_only_from_its_own_room(monkeypatch, where, cancelled):
    """A relation across rooms (a homeserver may pass one on from another server) must not
    let someone who has power in a room of their own cancel a job in this one."""

    async def not_handled(db, event_id):
        return False

    async def claimed(db, event_id, at):
        return None

    monkeypatch.setattr(database, "was_handled", not_handled)
    monkeypatch.setattr(database, "claim_event", claimed)
    queue = CancellingQueue()
    bot = make_bot(RecordingClient(state=power_levels(**{ALICE: 100})), queue=queue)
    pending = bot.pending.add(
        SimpleNamespace(id=1),
        SimpleNamespace(room_id=ROOM, sender=BOB, event_id=COMMAND, command={}),
    )
    pending.status = SimpleNamespace(event_id="$status")
    relation = {"rel_type": "m.annotation", "event_id": "$status", "key": "❌"}
    reaction = {
        "type": "m.reaction",
        "sender": ALICE,
        "event_id": "$reaction",
        "content": {"m.relates_to": relation},
    }
    await bot.on_event(where, reaction)
    assert bool(queue.cancelled) is cancelled


@pytest.mark.parametrize("relates", ["x", ["a"], 5, None])
async def test_a_reaction_with_a_malformed_relation_is_not_a_command(relates):
    bot = make_bot(RecordingClient())
    event = {"type": "m.reaction", "sender": BOB, "event_id": "$r", "content": {}}
    event["content"]["m.relates_to"] = relates
    await bot.on_event(ROOM, event)  # nothing read, nothing raised


# ---- messages without their room key ------------------------------------------------------


def test_only_allowed_senders_messages_wait_for_their_room_key():
    bot = make_bot(RecordingClient())
    assert bot.undecrypted.wanted(ALICE)
    assert not bot.undecrypted.wanted(EVIL)  # no key requests on their behalf
