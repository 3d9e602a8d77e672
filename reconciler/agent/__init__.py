"""The device: the loop, the pass, its executor, planning, local state and config."""
