"""The reference runtime: memory bank, decisions, tracker state machine and stage backends."""
