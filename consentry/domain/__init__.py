"""Pure decisions over plain data: no I/O, no clocks (time is an argument)."""
