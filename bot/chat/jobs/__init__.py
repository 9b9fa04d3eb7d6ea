"""The life of a job from the chat: accepted (checks, quota, stored), made, screened,
posted in its room's order with its status line, and resumed after a restart."""
