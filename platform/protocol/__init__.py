"""Wire models that cross a process boundary between the platform and the namespaces' workers."""
