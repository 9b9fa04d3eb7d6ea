"""The async world: Matrix, commands, rooms, usage. Never imports torch."""
