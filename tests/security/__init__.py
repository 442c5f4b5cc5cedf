"""Security tests: one per attack found by the hostile review (each failed before its fix), and one per refusal
that held, so it stays held. Most go through the real HTTP surface on the local Functions host."""
