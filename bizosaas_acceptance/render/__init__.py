"""Renderers: the gate's one Summary shown to people and machines (terminal, HTML,
JUnit, JSON). They read; they never count or decide."""
