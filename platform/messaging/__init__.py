"""Broker plumbing the services share: confirming channels per namespace vhost, settling and
dead-lettering deliveries, producing to a cell's topic and to the metering topic, and the ops client."""
