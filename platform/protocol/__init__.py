"""Every wire model that crosses a process boundary, one module per protocol: the tenant ingress, the cell's
topic, the worker protocol, the billing announcements, and the names a namespace's vhost holds."""
