"""The suites in tests/ get their fixtures from fixtures/.

The plugin itself (options, parametrization, gate, reports) is the installed
package ``bizosaas_acceptance``, loaded by its ``pytest11`` entry point
(``pip install -e .``), so its options are known before pytest reads the
command line (``--compose FILE`` works in the space form from any directory).
"""

pytest_plugins = [
    "fixtures.stack",      # the stack model, the target, the run id
    "fixtures.clients",    # Docker, PostgreSQL, Redis, Vault, Temporal, HTTP clients
    "fixtures.api",        # the documented API (stacks/api/) and its caller
]
