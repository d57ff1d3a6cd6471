"""The one registry type: registration, duplicates, and a helpful miss."""

import pytest

from graph.errors import GraphError, UnknownNameError, UserError
from graph.registry import Registry


def test_register_get_and_order():
    reg: Registry[int] = Registry("widget")
    reg.add("b", 2)

    @reg.register("a")
    def a() -> int:
        return 1

    assert reg.get("b") == 2 and reg.get("a") is a
    assert reg.names() == ("b", "a") and list(reg) == ["b", "a"] and len(reg) == 2 and "a" in reg


def test_duplicates_raise():
    reg: Registry[int] = Registry("widget")
    reg.add("x", 1)
    with pytest.raises(ValueError, match="widget 'x' is registered twice"):
        reg.add("x", 2)


def test_a_miss_names_the_key_the_closest_name_and_all_names():
    reg: Registry[int] = Registry("template", key="graph.template")
    for name in ("ppo", "grpo", "dpo"):
        reg.add(name, 0)
    with pytest.raises(UnknownNameError) as info:
        reg.get("ppp")
    assert str(info.value) == "graph.template: unknown template 'ppp' (did you mean 'ppo'?); known: dpo, grpo, ppo"
    assert isinstance(info.value, UserError)
    with pytest.raises(UnknownNameError, match="unknown template 'zzz'; known: dpo, grpo, ppo"):
        reg.get("zzz")


def test_the_miss_error_type_is_chosen_by_the_registry():
    reg: Registry[int] = Registry("interface", error=GraphError)
    with pytest.raises(GraphError, match="unknown interface 'x'; known: none"):
        reg.get("x")
