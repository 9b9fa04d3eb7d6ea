"""The commands answered with words (and a chart): help, styles, models, queue, cancel,
room defaults, usage, pause and resume."""
