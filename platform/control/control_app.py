"""The control plane's app: its workflows and activities register here, and the system namespace's
workers run it (with the billing export's, ``perdure.platform.processes.system_app``)."""

from __future__ import annotations

from perdure.tenants import App

control_app = App("control-plane")
