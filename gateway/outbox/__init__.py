"""The outbox: every outgoing message in SQLite until the broker has it (one writer thread)."""
