"""The BizOSaaS reference stack (a registry-free local replica of staging)."""
