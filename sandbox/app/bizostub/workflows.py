"""Temporal workflow definitions.

Loaded inside temporalio's workflow sandbox: only deterministic imports here.
The activity is referenced by name so this module never imports I/O code.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

TASK_QUEUE = "ai-agents"
ACTIVITY_NAME = "run_agent_task"


@workflow.defn(name="AgentTaskWorkflow")
class AgentTaskWorkflow:
    """Runs one agent task: a single activity that does the work and stores it."""

    @workflow.run
    async def run(self, task: dict[str, Any]) -> dict[str, Any]:
        """Execute the activity and return its result."""
        return await workflow.execute_activity(
            ACTIVITY_NAME,
            task,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
            result_type=dict,
        )
