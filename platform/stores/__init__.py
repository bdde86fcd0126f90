"""The databases the services share: the control database (cells, namespaces, accounts, deployed
apps) and a cell's run store, with how a run is shown (describe, list)."""
