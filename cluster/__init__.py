"""How a BSPump pipeline runs sharded: config, layout, wire format, shared memory, supervisor."""
