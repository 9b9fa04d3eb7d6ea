"""What the tests share that is not a test: the user's side of a chat (chatting.py), an
encrypting JavaScript client (e2ee_client.py), a test PKI and time-stamp authority, a
stand-in runner (runners.py)."""
