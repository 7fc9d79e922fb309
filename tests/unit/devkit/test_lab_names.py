"""The lab's names and addresses (bridge/devkit/lab.py), without creating any namespace: names unique per lab and
owned by their process, so that a stale lab is told from a live one; addresses as planned."""

from __future__ import annotations

import os

import pytest

from bridge.devkit.lab import PREFIX, Lab, _owner_alive
from bridge.devkit.labstack import Plan


def test_hosts_get_addresses_in_order_or_as_given_and_namespaces_of_their_own() -> None:
    lab = Lab(["front", "node-a", "caller"], addresses={"caller": 100})
    assert [h.address for h in lab.hosts.values()] == ["10.77.0.2", "10.77.0.3", "10.77.0.100"]
    assert len(set(lab.namespaces)) == 4 and all(n.startswith(f"{PREFIX}{os.getpid()}x") for n in lab.namespaces)
    assert Lab(["front"]).hub != lab.hub  # two labs of one process never share a name


def test_bad_host_lists_and_unknown_hosts_are_named() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Lab(["node-a", "node-a"])
    with pytest.raises(KeyError, match="no host 'node-z' in this lab"):
        Lab(["front"]).host("node-z")


def test_a_lab_is_stale_only_when_the_process_in_its_name_is_gone() -> None:
    assert _owner_alive(f"{PREFIX}{os.getpid()}xab12-front")
    assert not _owner_alive(f"{PREFIX}{2**22 + 7}xab12-front")  # above pid_max's default: no such process
    assert _owner_alive("cblab-someone-elses")  # not a name the lab makes: left alone


def test_the_plan_names_every_host() -> None:
    assert Plan(nodes=3).hosts == ["front", "model", "redis", "node-a", "node-b", "node-c", "caller"]
    assert Plan(sentinel=True).hosts[2:5] == ["redis-1", "redis-2", "sentinel"]
