"""Messages that arrive before their room key (`encryption.Undecrypted`), with a recording
fake client: whose messages make the bot ask for a key, and whose are let go."""

from __future__ import annotations

from nio import MegolmEvent

from bot.config.matrix import matches
from bot.matrix import encryption

ROOM = "!room:example.org"
ALLOWED = ["@*:example.org"]


class KeyClient:
    """Records the key requests; decrypts nothing."""

    user_id = "@imgbot:example.org"
    device_id = "BOTDEVICE"

    def __init__(self):
        self.requests: list = []

    async def to_device(self, message):
        self.requests.append(message)

    def decrypt_event(self, event):
        raise RuntimeError("no room key")


def encrypted(sender: str, session: str, n: int) -> MegolmEvent:
    event = MegolmEvent.from_dict(
        {
            "type": "m.room.encrypted",
            "sender": sender,
            "event_id": f"$e{n}",
            "origin_server_ts": 1,
            "room_id": ROOM,
            "content": {
                "algorithm": "m.megolm.v1.aes-sha2",
                "ciphertext": "AwgAEn",
                "sender_key": "senderkey",
                "session_id": session,
                "device_id": "THEIRDEVICE",
            },
        }
    )
    assert isinstance(event, MegolmEvent), event
    return event


async def test_only_allowed_senders_messages_make_the_bot_ask_for_keys():
    client = KeyClient()
    told: list = []

    async def tell(room_id, event, text):
        told.append(event["sender"])

    async def handle(room_id, event):
        raise AssertionError("nothing is decrypted")

    undecrypted = encryption.Undecrypted(
        client, handle, tell, wait=0.0, wanted=lambda sender: matches(sender, ALLOWED)
    )
    for n, sender in enumerate(["@x:evil.example", "@y:evil.example", "@alice:example.org"]):
        await undecrypted.add(ROOM, encrypted(sender, f"session{n}", n))
    # One request, for Alice's session: none on behalf of senders outside allowed_users.
    assert [r.session_id for r in client.requests] == ["session2"]
    assert list(undecrypted.waiting) == ["$e2"]
    await undecrypted.retry()  # wait=0: given up at once, and only Alice is told
    assert told == ["@alice:example.org"]
