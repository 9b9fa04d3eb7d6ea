"""SQLite: the connection and numbered migrations, jobs, the usage log, retention, the
gallery of posted pictures. Plain values in and out; no words for people, no Matrix.

May import bot.config and generation's seam (generation.job).
"""
