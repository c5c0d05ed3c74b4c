"""The top floor: the `consentry` command, `consentry up`'s supervisor, the embedded broker
and the demo. It stands on the kernel (`consentry`) and the services; nothing below it
imports it."""
