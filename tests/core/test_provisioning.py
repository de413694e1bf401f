"""Provisioning: idempotent upserts; a bad document fails whole and writes nothing."""

import copy
import json
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from pbxcontrol.db import models
from pbxcontrol.passwords import verify_password
from tests.conftest import TREE, write_config


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "pbxcontrol", *args], capture_output=True, text=True, timeout=120
    )


def snapshot(sessions):
    with sessions() as s:
        return {
            t.__tablename__: sorted(map(tuple, s.execute(select(*t.__table__.c)).all()), key=repr)
            for t in (
                models.Customer,
                models.CustomerTree,
                models.Role,
                models.RolePrivilege,
                models.Person,
                models.Line,
                models.Peer,
                models.Number,
                models.DirectoryEntry,
            )
        }


def test_provision_cli_applies_and_is_idempotent(tmp_path, rt):
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(TREE))
    first = snapshot(rt.sessions)
    proc = cli("--config", rt.config.path, "provision", str(doc))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("provisioned 7 customers")
    assert snapshot(rt.sessions) == first


def test_passwords_are_stored_hashed_and_verify(rt):
    with rt.sessions() as s:
        person = s.get(models.Person, "acme")
    assert "acme-pass" not in person.password_hash
    assert verify_password("acme-pass", person.password_hash)
    assert not verify_password("acme-pas", person.password_hash)


def test_customer_tree_closure(rt):
    with rt.sessions() as s:
        under_2 = set(
            s.scalars(
                select(models.CustomerTree.descendant_id).where(
                    models.CustomerTree.ancestor_id == 2
                )
            )
        )
        depth = s.scalar(
            select(models.CustomerTree.depth).where(
                models.CustomerTree.ancestor_id == 1, models.CustomerTree.descendant_id == 5
            )
        )
    assert under_2 == {2, 3, 4, 5}
    assert depth == 3


def test_upsert_changes_fields_and_keeps_password_when_omitted(rt, tmp_path):
    from pbxcontrol import provisioning

    with rt.sessions.begin() as s:
        provisioning.apply(
            s,
            {
                "customers": [{"id": 4, "name": "Beta AG", "parent": 6}],
                "people": [{"username": "acme", "customer": 3, "role": "user", "enabled": False}],
                "directory": [{"customer": None, "number": "112", "name": "Emergency services"}],
            },
        )
    with rt.sessions() as s:
        assert s.get(models.Customer, 4).name == "Beta AG"
        person = s.get(models.Person, "acme")
        assert (person.role, person.enabled) == ("user", False)
        assert verify_password("acme-pass", person.password_hash)
        names = s.scalars(
            select(models.DirectoryEntry.name).where(models.DirectoryEntry.number == "112")
        ).all()
        assert names == ["Emergency services"]
        ancestors = set(
            s.scalars(
                select(models.CustomerTree.ancestor_id).where(
                    models.CustomerTree.descendant_id == 4
                )
            )
        )
    assert ancestors == {4, 6, 1}


def test_children_may_come_before_parents_in_the_document(tmp_path, rt):
    from pbxcontrol import provisioning

    with rt.sessions.begin() as s:
        provisioning.apply(
            s,
            {
                "customers": [
                    {"id": 21, "name": "leaf", "parent": 20},
                    {"id": 20, "name": "mid", "parent": 2},
                ]
            },
        )
    with rt.sessions() as s:
        assert s.get(models.Customer, 21).parent_id == 20


def _bad(doc_update):
    doc = copy.deepcopy(TREE)
    doc_update(doc)
    return doc


BAD_DOCUMENTS = {
    "unknown parent": (
        lambda d: d["customers"].append({"id": 9, "name": "x", "parent": 99}),
        "customers[7].parent: unknown customer 99",
    ),
    "cycle": (
        lambda d: d["customers"].__setitem__(1, {"id": 2, "name": "R", "parent": 5}),
        "customers[1].parent: makes a cycle in the customer tree",
    ),
    "second root": (
        lambda d: d["customers"].append({"id": 9, "name": "x", "parent": None}),
        "customers[7].parent: only one customer may be the root",
    ),
    "unknown role": (
        lambda d: d["people"][0].__setitem__("role", "wizard"),
        "people[0].role: unknown role 'wizard'",
    ),
    "duplicate key": (
        lambda d: d["lines"].append(dict(d["lines"][0])),
        "lines[5]: duplicate key 'PJSIP/alice' (also lines[0])",
    ),
    "wrong type": (
        lambda d: d["customers"][2].__setitem__("max_calls", "two"),
        'customers[2].max_calls: must be an integer, not "two"',
    ),
    "bool is not int": (
        lambda d: d["peers"][0].__setitem__("ingroup", True),
        "peers[0].ingroup: must be an integer, not true",
    ),
    "number as int": (
        lambda d: d["numbers"].append({"number": 123, "customer": 3}),
        "numbers[3].number: must be a string, not 123",
    ),
    "unknown customer": (
        lambda d: d["lines"][0].__setitem__("customer", 42),
        "lines[0].customer: unknown customer 42",
    ),
    "unknown field": (
        lambda d: d["peers"][0].__setitem__("colour", "red"),
        "peers[0].colour: unknown field",
    ),
    "missing field": (lambda d: d["people"][0].pop("customer"), "people[0].customer: is required"),
    "bad endpoint": (
        lambda d: d["lines"][0].__setitem__("endpoint", "alice"),
        "lines[0].endpoint: 'alice' is not TECH/resource",
    ),
    "line is a peer": (
        lambda d: d["lines"].append({"endpoint": "PJSIP/trunk1", "customer": 3, "number": "9"}),
        "lines[5].endpoint: PJSIP/trunk1 is already a peer",
    ),
    "unknown privilege": (
        lambda d: d["roles"][0]["privileges"].append("root"),
        "roles[0].privileges: unknown privilege 'root'",
    ),
    "enabled not bool": (
        lambda d: d["people"][0].__setitem__("enabled", "yes"),
        'people[0].enabled: must be true or false, not "yes"',
    ),
    "unknown section": (lambda d: d.__setitem__("trunks", []), "trunks: unknown section"),
    "section not list": (lambda d: d.__setitem__("numbers", {}), "numbers: must be a list"),
    "item not object": (lambda d: d["numbers"].append("0201"), "numbers[3]: must be an object"),
    "empty password": (
        lambda d: d["people"].append(
            {"username": "new", "password": "", "customer": 3, "role": "user"}
        ),
        "people[8].password: must not be empty",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_bad_document_fails_whole_and_writes_nothing(tmp_path, rt, case):
    change, message = BAD_DOCUMENTS[case]
    doc = _bad(change)
    # Something valid is changed too, so a half-applied document would show.
    doc["customers"][0]["name"] = "Renamed"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    before = snapshot(rt.sessions)
    proc = cli("--config", rt.config.path, "provision", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith(f"pbxcontrol: error: {path}: ")
    assert message in lines[0]
    assert snapshot(rt.sessions) == before


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "the document must be a JSON object of lists"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_unparseable_document(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    config = write_config(tmp_path)
    proc = cli("--config", str(config), "provision", str(path))
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_missing_document(tmp_path):
    config = write_config(tmp_path)
    proc = cli("--config", str(config), "provision", str(tmp_path / "nope.json"))
    assert proc.returncode == 2
    assert "cannot read" in proc.stderr


def test_builtin_roles(rt):
    with rt.sessions() as s:
        rows = s.execute(
            select(models.RolePrivilege.role, func.count()).group_by(models.RolePrivilege.role)
        ).all()
        privileges = {
            r: set(
                s.scalars(
                    select(models.RolePrivilege.privilege).where(models.RolePrivilege.role == r)
                )
            )
            for r, _ in rows
        }
    full = {"user", "telephone line reports", "callshop"}
    assert privileges["system owner"] == privileges["reseller"] == full
    assert privileges["administrator"] == full
    assert privileges["user"] == {"user"}
    assert privileges["callshop"] == {"callshop"}
    assert privileges["panel"] == {"panel"}
    assert privileges["wallboard"] == {"telephone line reports"}
