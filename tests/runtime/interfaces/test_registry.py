"""Tests of runtime/interfaces/registry.py."""

from __future__ import annotations

import pytest

from graph.catalog import SFTArgs, known_interfaces
from runtime.interfaces import get_impl, implemented_interfaces, register, run_interface


def test_every_catalog_interface_is_implemented() -> None:
    assert implemented_interfaces() == known_interfaces()


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown interface implementation 'ppo_actr' \(did you mean 'ppo_actor'\?\); known: .*ppo_actor"):
        get_impl("ppo_actr")


def test_duplicates_and_non_catalog_names_raise() -> None:
    with pytest.raises(ValueError, match="'sft' is registered twice"):
        register("sft")(lambda *a: None)
    with pytest.raises(ValueError, match="not in the catalog"):
        register("my_interface")(lambda *a: None)


def test_args_type_is_checked() -> None:
    with pytest.raises(ValueError, match="takes GenerateArgs, got SFTArgs"):
        run_interface("generate", None, None, SFTArgs())
