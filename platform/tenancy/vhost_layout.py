"""What a namespace's RabbitMQ vhost holds, by name: the contract between provisioning, the cell's
services and the tenant client."""

INGRESS_QUEUE = "ingress"  # tenant requests to admission
ACTIVITIES_QUEUE = "activities"  # activity tasks to the executors
INGRESS_DEAD_LETTERS = "ingress.dead-letters"
ACTIVITIES_DEAD_LETTERS = "activities.dead-letters"
RESULTS_EXCHANGE = "results"  # topic exchange: run closes (see ``close_routing_key``)
DEAD_LETTER_EXCHANGE = "dead-letters"
