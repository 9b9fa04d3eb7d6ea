"""What people say and get: the pure parser and its tables (sub-commands, options),
styles, resolving a command to a job, word replies, iterate, room defaults, quotas, the
admin report, and the roles that take events in, accept and resume jobs, and deliver
results.

May import bot.ops, bot.matrix, bot.store, bot.config, bot.text and generation (the job,
the queue and its tickets, PNG encoding, the compliance checks).
"""
