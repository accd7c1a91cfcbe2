"""The stack model of a Docker Swarm stack (``--swarm-stack NAME``).

``docker stack deploy`` ignores ``container_name``: a manifest (or compose)
service ``x`` runs as the Swarm service ``NAME_x``, its tasks as containers
``NAME_x.<slot>.<task id>`` on whichever node the scheduler picked. In Swarm
mode the model's ``Service.container`` therefore names the Swarm service: it
is the key of the run's Docker snapshot (which maps it to the container of the
service's running task, see :mod:`bizosaas_acceptance.probes.swarm`), the DNS
name probed from inside other tasks (a service name resolves on the stack's
networks), and the name in failure messages (``docker service ps NAME_x``).

Networks a compose file does not name explicitly are ``NAME_<key>`` in a stack
(``<project>_<key>`` under ``docker compose``): a compose-derived model's
network names are renamed accordingly.
"""

from __future__ import annotations

from dataclasses import replace

from bizosaas_acceptance.model.manifest import Stack

#: Labels Swarm puts on every service and task container of a stack.
NAMESPACE_LABEL = "com.docker.stack.namespace"
SERVICE_LABEL = "com.docker.swarm.service.name"
TASK_LABEL = "com.docker.swarm.task.name"
NODE_LABEL = "com.docker.swarm.node.id"


def service_name(stack_name: str, key: str) -> str:
    """The Swarm service of manifest service ``key`` in stack ``stack_name``."""
    return f"{stack_name}_{key}"


def _rename(network: str | None, project: str | None, stack_name: str) -> str | None:
    if network and project and network.startswith(project + "_"):
        return service_name(stack_name, network[len(project) + 1:])
    return network


def apply_swarm(stack: Stack, stack_name: str, project: str | None = None) -> Stack:
    """The model of ``stack`` deployed as Swarm stack ``stack_name``.

    ``project``: the compose project name when the model was derived from
    compose files, so that its default network names become the stack's.
    """
    services = {
        key: replace(svc, container=service_name(stack_name, key),
                     networks=tuple(n for n in (_rename(net, project, stack_name)
                                                for net in svc.networks) if n))
        for key, svc in stack.services.items()
    }
    return replace(stack, services=services,
                   network=_rename(stack.network, project, stack_name))
