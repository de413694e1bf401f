"""Provisioning: idempotent upserts; a bad document fails whole and writes nothing."""

import copy
import json
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from pbxcontrol import provisioning
from pbxcontrol.auth.passwords import verify_password
from pbxcontrol.db import models
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
    "monitor mode": (
        lambda d: d["customers"][2].__setitem__("monitor", "spy"),
        "customers[2].monitor: must be one of none, listen, whisper, barge (or null), not 'spy'",
    ),
    "record not 0/1": (
        lambda d: d["customers"][2].__setitem__("record", 2),
        "customers[2].record: must be 0 or 1 (or null), not 2",
    ),
    "announce not bool": (
        lambda d: d["customers"][2].__setitem__("monitor_announce", True),
        "customers[2].monitor_announce: must be 0 or 1 (or null), not True",
    ),
    "context": (
        lambda d: d["customers"][2].__setitem__("context", "a b"),
        "customers[2].context: must be a dialplan context name",
    ),
    "line owner": (
        lambda d: d["lines"][0].__setitem__("owner", "nobody"),
        "lines[0].owner: unknown person 'nobody'",
    ),
    "line machine": (
        lambda d: d["lines"][0].__setitem__("machine", 0),
        "lines[0].machine: must be at least 1",
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
    full = {"user", "telephone line reports", "callshop", "actions"}  # SPEC §5
    assert privileges["system owner"] == full | {"monitor"}  # SPEC §11.1: only the system owner
    assert privileges["reseller"] == full
    assert privileges["administrator"] == full
    assert privileges["user"] == {"user"}
    assert privileges["callshop"] == {"callshop"}
    assert privileges["panel"] == {"panel"}
    assert privileges["wallboard"] == {"telephone line reports"}


def directory(count, customer=3, suffix=""):
    """`count` directory entries of one customer (None: global), numbers 0300000000 up."""
    return [
        {"customer": customer, "number": f"0{300000000 + i}", "name": f"Contact {i}{suffix}"}
        for i in range(count)
    ]


def stored_directory(sessions, customer):
    entry = models.DirectoryEntry
    with sessions() as s:
        where = entry.customer_id.is_(None) if customer is None else entry.customer_id == customer
        return s.execute(select(entry.number, entry.name).where(where)).tuples().all()


def test_bulk_upsert_inserts_then_updates_directory_rows(rt):
    from pbxcontrol import provisioning
    from pbxcontrol.provisioning import Change

    rows = directory(12_000)  # several batches
    with rt.sessions.begin() as s:
        first = provisioning.apply(s, {"directory": rows})
    again = directory(12_100)  # 100 new
    for entry in again[::3]:
        entry["name"] += " (moved)"  # 4,000 renamed, 8,000 as they were
    with rt.sessions.begin() as s:
        second = provisioning.apply(s, {"directory": again})
    assert first.changes["directory"] == Change(inserted=12_000, updated=0, unchanged=0)
    assert second.changes["directory"] == Change(inserted=100, updated=4_000, unchanged=8_000)
    stored = stored_directory(rt.sessions, 3)
    assert len(stored) == 12_101  # and TREE's one entry of customer 3
    assert dict(stored) == {e["number"]: e["name"] for e in again} | {"0207946000": "Dentist"}


def test_global_directory_entries_are_upserted_not_duplicated(rt):
    from sqlalchemy.exc import IntegrityError

    from pbxcontrol import provisioning

    for suffix in ("", " (renamed)", " (renamed)"):
        doc = {"directory": directory(6_000, customer=None, suffix=suffix)}
        doc["directory"].append({"customer": None, "number": "112", "name": f"SOS{suffix}"})
        with rt.sessions.begin() as s:
            provisioning.apply(s, doc)
    stored = stored_directory(rt.sessions, None)
    assert len(stored) == 6_001
    assert dict(stored)["112"] == "SOS (renamed)"
    assert dict(stored)["0300000007"] == "Contact 7 (renamed)"
    # The database itself refuses a second global entry for a number (migration 0005).
    with pytest.raises(IntegrityError), rt.sessions.begin() as s:
        s.add(models.DirectoryEntry(customer_id=None, number="112", name="again"))


def test_bad_item_after_many_good_ones_fails_whole(tmp_path, rt):
    doc = copy.deepcopy(TREE)
    doc["customers"][0]["name"] = "Renamed"
    doc["directory"] += directory(20_000)
    doc["directory"].append({"customer": 3, "number": "0209", "name": 7})
    path = tmp_path / "big.json"
    path.write_text(json.dumps(doc))
    before = snapshot(rt.sessions)
    proc = cli("--config", rt.config.path, "provision", str(path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"pbxcontrol: error: {path}: directory[20003].name: must be a string, not 7"
    )
    assert snapshot(rt.sessions) == before


def test_failure_while_writing_leaves_nothing_written(rt, monkeypatch):
    """A database error in the middle of the writes (disk full, a lock timeout) rolls back
    every batch written before it: one transaction."""
    from sqlalchemy.exc import OperationalError

    from pbxcontrol.provisioning import bulk

    written = []
    real_write = bulk._write

    def write_then_fail(conn, rows, changed):
        if rows.section == "directory" and len(written) == 2:
            raise OperationalError("INSERT", {}, Exception("database or disk is full"))
        written.append(len(changed))
        real_write(conn, rows, changed)

    monkeypatch.setattr(bulk, "_write", write_then_fail)
    from pbxcontrol import provisioning

    doc = copy.deepcopy(TREE)
    doc["customers"][0]["name"] = "Renamed"
    doc["directory"] += directory(3 * bulk.BATCH)
    before = snapshot(rt.sessions)
    with pytest.raises(OperationalError), rt.sessions.begin() as s:
        provisioning.apply(s, doc)
    assert written == [1, bulk.BATCH - 3]  # customers, a directory batch (TREE's 3 unchanged)
    assert snapshot(rt.sessions) == before


def data_version(sessions):
    with sessions() as s:
        return s.scalar(select(models.Counter.value).where(models.Counter.name == "api_data"))


def test_dry_run_writes_nothing_and_reports_what_would_change(tmp_path, rt):
    doc = copy.deepcopy(TREE)
    doc["customers"][1]["name"] = "Reseller A (renamed)"
    doc["customers"].append({"id": 8, "name": "New Ltd", "parent": 6})
    doc["roles"][0]["privileges"].append("callshop")
    doc["lines"][0]["name"] = "Alice Jones"
    doc["directory"] += directory(2)
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    before, version = snapshot(rt.sessions), data_version(rt.sessions)
    proc = cli("--config", rt.config.path, "provision", "--dry-run", str(path))
    assert proc.returncode == 0, proc.stderr
    assert snapshot(rt.sessions) == before
    assert data_version(rt.sessions) == version
    report = proc.stdout.splitlines()
    assert (
        report[0].startswith("dry run: 8 customers, 1 roles, 8 people")
        and "nothing written" in report[0]
    )
    assert report[1:] == [
        "  customers: 1 would insert, 1 would update, 6 unchanged",
        "  roles: 0 would insert, 1 would update, 0 unchanged",
        "  people: 0 would insert, 0 would update, 8 unchanged",
        "  lines: 0 would insert, 1 would update, 4 unchanged",
        "  peers: 0 would insert, 0 would update, 1 unchanged",
        "  numbers: 0 would insert, 0 would update, 3 unchanged",
        "  directory: 2 would insert, 0 would update, 3 unchanged",
    ]
    # The real run does what the dry run said.
    proc = cli("--config", rt.config.path, "provision", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1:] == [
        line.replace("would insert", "inserted").replace("would update", "updated")
        for line in report[1:]
    ]
    assert snapshot(rt.sessions) != before


def big_document(tmp_path):
    from pbxcontrol.provisioning.progress import MIN_ITEMS

    path = tmp_path / "big.json"
    path.write_text(json.dumps({"directory": directory(MIN_ITEMS)}))
    return path


def test_progress_bar_is_quiet_when_stderr_is_not_a_terminal(tmp_path, rt):
    proc = cli("--config", rt.config.path, "provision", str(big_document(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("provisioned 10000 directory")


def test_progress_bar_is_drawn_on_a_terminal(tmp_path, rt):
    import os
    import pty

    primary, secondary = pty.openpty()
    argv = [sys.executable, "-m", "pbxcontrol", "--config", rt.config.path, "provision"]
    proc = subprocess.Popen(
        [*argv, str(big_document(tmp_path))], stdout=subprocess.PIPE, stderr=secondary
    )
    os.close(secondary)
    drawn = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        drawn += chunk
    os.close(primary)
    assert proc.wait(timeout=120) == 0
    assert b"directory" in drawn and b"10000/10000" in drawn


def _resets(rt) -> int:
    table = models.Base.metadata.tables["leg_changes"]
    with rt.engine.connect() as conn:
        return conn.execute(select(func.count()).where(table.c.op == "reset")).scalar_one()


def test_a_change_to_what_the_list_shows_writes_one_reset_even_late_in_a_transaction(rt):
    """Streams and in-memory views start anew on a reset entry: written whenever the tree,
    lines or directory changed — also by a second apply in one transaction, when the data
    version (bumped once per transaction on PostgreSQL) does not move again."""
    before = _resets(rt)
    with rt.sessions.begin() as session:  # nothing the list shows: no reset
        provisioning.apply(session, {"peers": [{"id": 9, "endpoint": "PJSIP/t9", "name": "T9"}]})
    assert _resets(rt) == before
    with rt.sessions.begin() as session:
        entry = {"customer": 3, "number": "0207946000", "name": "Dr Who"}
        provisioning.apply(session, {"directory": [entry]})
        provisioning.apply(session, {"customers": [{"id": 5, "name": "Acme Branch", "parent": 6}]})
        provisioning.apply(session, {"directory": [dict(entry, name="Dr No")]})
    assert _resets(rt) == before + 3
    with rt.sessions.begin() as session:  # the same again: nothing written, no reset
        provisioning.apply(session, {"directory": [dict(entry, name="Dr No")]})
    assert _resets(rt) == before + 3
