"""Everything that runs on one machine for a try-out: the throw-away Synapse homeserver,
the showcase demo, and the bench through chat.

May import bot.app and everything below it.
"""
