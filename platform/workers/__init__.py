"""Platform-hosted workers: the processes that run a namespace's code for it (in a sandbox), the
supervisor that starts them, and what the platform learns of an app without importing it."""
