"""Talking to the homeserver: login and device, the sync loop, sending and uploading,
encryption and cross-signing, fetching the media a command points at.

May import bot.config and bot.text; knows nothing of chat commands, the store or generation.
"""
