"""The long-running processes, composed from the services: a cell process, a platform-hosted worker, the
system namespace's app and the control plane's bootstrap."""
