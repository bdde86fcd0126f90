"""Registering a namespace's search attributes: the record in the control database, and the index of
the namespace's cell that serves queries over it."""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING

from perdure.platform.core.search_attribute_registry import check_registration
from perdure.platform.core.visibility_plan import attribute_index_keys
from perdure.platform.core.visibility_query import AttributeType
from perdure.platform.stores.control_store import ControlStore
from perdure.platform.stores.run_store import RunStore


async def index_search_attribute(store: RunStore, name: str, kind: AttributeType) -> str:
    """Create the runs index over an attribute (one per name, shared by the cell's namespaces that
    register it); returns its name."""
    keys = [
        (field, ASCENDING if order > 0 else DESCENDING) for field, order in attribute_index_keys(name, kind)
    ]
    return await store.runs.create_index(keys, name=f"search_attribute_{keys[1][0]}")


async def register_search_attribute(
    control: ControlStore, store: RunStore, namespace: str, name: str, kind: AttributeType
) -> bool:
    """Register ``name`` of type ``kind`` for ``namespace`` (whose cell's runs are ``store``): the index
    first, so that no query is accepted over an attribute its cell has no index for. False: registered
    already with this type. Raises ``RegistrationError`` for one that cannot be registered."""
    check_registration(await control.search_attributes_of(namespace), name, kind)
    await index_search_attribute(store, name, kind)
    return await control.add_search_attribute(namespace, name, kind)


async def search_attributes_of(control: ControlStore, namespace: str) -> dict[str, AttributeType]:
    """The attributes ``namespace`` registered, with their types (what its queries are checked against)."""
    return await control.search_attributes_of(namespace)
