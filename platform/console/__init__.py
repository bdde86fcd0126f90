"""The Perdure console: a web UI for tenants and operators (docs/architecture.md, "The console")."""
