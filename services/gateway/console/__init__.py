"""The operators' console: the live dashboard page and the view it polls, computed from the
services' /metrics and /readyz and the tail of posts.rejected."""
