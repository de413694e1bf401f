"""Upgrades without downtime (SPEC §12): the previous release — its code from git history —
keeps serving on the schema this release migrated to, while this release serves too, and both
answer calls/active/list correctly; restarted after the migration, it still starts.

The previous release is main as it was before the work on SPEC §12's waits, failover and
upgrades landed (schema 0017), laid out as it is installed (its plugins in
pbxcontrol/plugins/) and run with `python -m pbxcontrol` from that directory, on the same
dependencies. It knows nothing of the compatibility floor: it starts because
`alembic_version` still names its head (migrate.LEGACY_HEAD, pbxcontrol/db/migrate.py).
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import MetaData, Table, insert

from pbxcontrol.db import migrate
from pbxcontrol.db.engine import make_engine
from pbxcontrol.plugin import tables
from tests.conftest import LIST, TREE, cli, write_config
from tests.plugins.active_calls.conftest import CALLS, leg
from tests.processes import ADMIN, Service

REPO = Path(__file__).resolve().parents[2]
#: main before SPEC §12's waits, failover and upgrades: the release hosts still run mid-upgrade.
PREVIOUS = "1fd83f1a5e57a831806641e4d7538bab315b6c63"
PREVIOUS_HEAD = "0017"


@pytest.fixture(scope="session")
def previous_release(tmp_path_factory) -> Path:
    """The previous release's code, laid out as installed; `python -m pbxcontrol` run from
    this directory imports it (the current directory comes first on sys.path)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS, "pbxcontrol", "plugins"],
        capture_output=True,
    )
    if archive.returncode != 0:
        pytest.fail(
            f"this test needs the git history (a clone, not an export) with {PREVIOUS}:\n"
            + archive.stderr.decode(errors="replace"),
            pytrace=False,
        )
    root = tmp_path_factory.mktemp("previous-release")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    (root / "plugins").rename(root / "pbxcontrol" / "plugins")
    return root


#: Provisioning fields added since the previous release (SPEC §11.7's call-control policy):
#: it refuses a document naming them, as it should, so the tree it provisions leaves them out.
NEWER_FIELDS = {
    "customers": {"monitor", "monitor_announce", "record", "context"},
    "lines": {"owner", "machine"},
}


def previous_document(tree: dict) -> dict:
    return {
        kind: [{k: v for k, v in item.items() if k not in NEWER_FIELDS[kind]} for item in items]
        if kind in NEWER_FIELDS
        else items
        for kind, items in tree.items()
    }


def run_previous(root: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(config, *args, cwd=root)


def listed(service: Service) -> list[dict]:
    body = service.get(f"{LIST}?{ADMIN};customer=system").json()
    assert body["responses"][0]["code"] == "200", body
    return body["data"]


def same_answers(old: list[dict], new: list[dict], expected: set[str]) -> None:
    """Both list exactly the expected legs; the new release's rows hold every field of the
    old one's with the same value (a newer release may add fields)."""
    assert {row["uniqueid"] for row in old} == expected
    assert [row["uniqueid"] for row in new] == [row["uniqueid"] for row in old]
    for was, now in zip(old, new, strict=True):
        assert {k: now.get(k) for k in was} == was


def test_the_previous_release_serves_on_the_new_schema_beside_this_one(
    tmp_path, empty_db_url, previous_release
):
    config = write_config(tmp_path, db=empty_db_url)
    created = run_previous(previous_release, config, "initdb")
    assert created.returncode == 0, created.stderr
    assert f"to revision {PREVIOUS_HEAD}" in created.stdout  # its code, not this release's
    doc = tmp_path / "tree.json"
    doc.write_text(json.dumps(previous_document(TREE)))
    assert run_previous(previous_release, config, "provision", str(doc)).returncode == 0
    engine = make_engine(empty_db_url)
    with engine.begin() as conn:  # the legs table as the previous release made it
        old_legs = Table(tables.legs.name, MetaData(), autoload_with=conn)
        columns = set(old_legs.c.keys())
        conn.execute(
            insert(old_legs), [{k: v for k, v in r.items() if k in columns} for r in CALLS]
        )
    old = Service(config, "api", cwd=previous_release)
    new: Service | None = None
    try:
        old.listening()
        before = listed(old)
        # This release migrates while the previous one serves.
        migrated = cli(config, "initdb")
        assert migrated.returncode == 0, migrated.stderr
        assert f"upgraded from {PREVIOUS_HEAD} to revision {migrate.head_revision()}" in (
            migrated.stdout
        )
        new = Service(config, "api")
        new.listening()
        expected = {row["uniqueid"] for row in CALLS}
        same_answers(before, listed(new), expected)
        same_answers(listed(old), listed(new), expected)
        # A change after the migration reaches both.
        with engine.begin() as conn:
            conn.execute(insert(tables.legs), [leg("900.1", "900.1", 900, channel="PJSIP/z-1")])
        same_answers(listed(old), listed(new), expected | {"900.1"})
        # Restarted mid-upgrade, the previous release starts on the new schema.
        assert old.stop() == 0, old.log
        old = Service(config, "api", cwd=previous_release)
        old.listening()
        same_answers(listed(old), listed(new), expected | {"900.1"})
    finally:
        statuses = [old.stop(), new.stop() if new else 0]
        engine.dispose()
    assert statuses == [0, 0], (old.log, new.log if new else "")
