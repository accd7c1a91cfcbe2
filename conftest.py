"""Wires the acceptance plugins.

The checks live in tests/, the logic in fixtures/ and acceptance/.
"""

pytest_plugins = [
    "acceptance.plugin",   # options, markers, labels, gate and reports
    "fixtures.stack",      # stack model, parametrization, secret masking
    "fixtures.clients",    # Docker, PostgreSQL, Redis, Vault, Temporal, HTTP clients
    "fixtures.api",        # the documented API as data (stacks/api/), request helpers
]
