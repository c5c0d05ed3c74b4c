"""Gateway: takes objections from people and operators and publishes them durably."""
