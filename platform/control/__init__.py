"""The control plane: what runs the platform, partly as workflows of the system namespace."""
