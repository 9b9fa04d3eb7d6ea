"""GPU workers on a Ray cluster (`generation.backend: ray`).

The bot's process never imports Ray: `link` starts a bridge process (`bridge`, the Ray
driver), or connects to one of its own user (socket mode), and talks to it in `frames` of
a fixed form (`messages`: JSON and PNG bytes, checked on receipt, never pickle), so that a
head node that goes away (Ray's driver then blocks, and ends its process after a while)
costs the bot a restarted bridge, never its queue or its chat side. Each worker is a Ray
actor (`actor`) that loads the models from its own host's folders as a local worker does;
`remote` is the runner a local worker thread drives in place of an engine, one per actor
slot, so that the queue stays the one source of truth (order, batching, cancel, pause) and
a lost actor's batch goes back to its front.
"""
