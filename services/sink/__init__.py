"""Training sink: applies training.posts to the Delta table, in stream order, once."""
