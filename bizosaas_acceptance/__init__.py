"""The BizOSaaS acceptance plugin: options, gate and reports."""
