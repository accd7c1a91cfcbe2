"""One module per stand-in: ``setup_db(conn)``, ``routes()``, optional
``health_extra(rt)``, ``start(rt)``, ``stop(rt)`` and ``HEALTH_NESTED``."""
