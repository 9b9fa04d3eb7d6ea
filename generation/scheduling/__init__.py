"""The bounded queue and its workers: the line, its positions and waits, pause, cancel and
what a failed worker does to it (`queue`), how batches form (`batching`), the measured speed
(`pace`), one worker thread per device (`workers`), a submitted job (`ticket`), the runner a
worker drives and the ways a worker is lost (`runner`), and the progress of a batch as plain
values (`progress`).

Knows a runner only through the `Runner` protocol, never an engine or a model: imports only
`generation.runtime` (a worker's device) and `generation.job`.
"""
