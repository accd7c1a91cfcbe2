"""BizOSaaS application service stand-ins.

One package serves all eight services of the reference stack; ``SERVICE``
picks which. Kept import-free on purpose: the Temporal workflow sandbox
re-imports this package when it loads :mod:`bizostub.workflows`.
"""

__version__ = "1.0.0"
