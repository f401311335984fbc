"""The uplink: the outbox's rows to an MQTT broker, in order, at least once (paho in a thread)."""
