"""Running the service: health and metrics, logs, the watchdog, the owner of background
tasks, and `imgbot check`.

May import bot.matrix, bot.store, bot.config, bot.text and generation.
"""
