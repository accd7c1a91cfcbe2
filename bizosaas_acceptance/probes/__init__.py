"""How we look at the target; every call bounded by a deadline."""
