"""What a namespace's RabbitMQ vhost holds, by name: the contract between provisioning, the cell's
services and the tenant client."""

INGRESS_QUEUE = "ingress"  # tenant requests to admission
ACTIVITIES_QUEUE = "activities"  # activity tasks to the namespace's workers
WORKFLOW_TASKS_QUEUE = "workflow-tasks"  # workflow tasks to any of the namespace's workers
WORKER_REPORTS_QUEUE = "worker-reports"  # commands and activity outcomes from the workers
WORKFLOW_TASKS_DEAD_LETTERS = "workflow-tasks.dead-letters"
WORKER_REPORTS_DEAD_LETTERS = "worker-reports.dead-letters"
INGRESS_DEAD_LETTERS = "ingress.dead-letters"
ACTIVITIES_DEAD_LETTERS = "activities.dead-letters"
RESULTS_EXCHANGE = "results"  # topic exchange: run closes (see ``close_routing_key``)
DEAD_LETTER_EXCHANGE = "dead-letters"

# A worker's sticky queue: exclusive, named by the worker (a robust connection re-declares it by name).
STICKY_QUEUE_PREFIX = "sticky."
STICKY_QUEUE_PATTERN = r"^sticky\.[0-9a-f]{32}$"
# A tenant client's reply queue: exclusive, named by the client (re-declared by name after a reconnect).
CLIENT_QUEUE_PREFIX = "client."


def namespace_user_permissions() -> dict[str, str]:
    """What a namespace's key may do in its vhost (configure, write, read regexes): publish to its
    queues through the default exchange, declare and use its own reply and sticky queues, consume its
    work queues (as workers do) and follow run closes; nothing else, in no other vhost."""
    own = r"amq\.gen-.*|sticky\..*|client\..*"
    return {
        "configure": rf"^({own})$",
        "write": rf"^(amq\.default|{own})$",
        "read": rf"^({own}|{RESULTS_EXCHANGE}|{ACTIVITIES_QUEUE}|{WORKFLOW_TASKS_QUEUE})$",
    }
