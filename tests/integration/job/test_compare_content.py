"""``compare: content``: a change that keeps the version is still found and applied."""

from __future__ import annotations

from tests.integration.job.lane import Lane, load_prices


def test_a_change_without_a_version_bump_is_applied(lane: Lane) -> None:
    load_prices(lane, 10)
    lane.dst("ALTER TABLE prices ADD COLUMN doc json")  # no equality operator for json
    lane.src("ALTER TABLE prices ADD COLUMN doc json")
    lane.src("UPDATE prices SET doc = '{\"a\": 1}'")
    lane.spec["spec"]["source"]["compare"] = "content"
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET price = 5.55 WHERE id = 3")  # updated_at unchanged
    lane.src("UPDATE prices SET doc = '{\"a\": 2}' WHERE id = 4")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["delta"]["update"] == 2
    assert result.report["apply"]["updated"] == 2
    assert lane.table_text("destination") == lane.table_text("source")
    again = lane.run("run")
    assert again.code == 0 and again.report["reason"] == "NoChanges"


def test_equal_content_is_already_current_and_a_newer_version_is_kept(lane: Lane) -> None:
    load_prices(lane, 10)
    lane.spec["spec"]["source"]["compare"] = "content"
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET title = 'changed' WHERE id IN (1, 2, 3)")
    lane.dst("UPDATE prices SET title = 'changed' WHERE id = 1")  # the event lane, same version
    lane.dst("UPDATE prices SET title = 'newer', updated_at = now() + interval '1 h' "
             "WHERE id = 2")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"] == {"inserted": 0, "updated": 1, "deleted": 0,
                                      "alreadyCurrent": 1, "staleSkipped": 1}
    assert lane.dst("SELECT id, title FROM prices WHERE id <= 3 ORDER BY id") == [
        (1, "changed"), (2, "newer"), (3, "changed")]


def test_a_column_added_or_retyped_since_the_last_snapshot_is_compared(lane: Lane) -> None:
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, updated_at timestamptz NOT NULL, c int)")
    lane.src("INSERT INTO prices SELECT g, now(), g FROM generate_series(1, 100) g")
    lane.spec["spec"]["source"]["compare"] = "content"
    assert lane.run("run").code == 0
    lane.both("ALTER TABLE prices ADD COLUMN extra text, ALTER COLUMN c TYPE text")
    lane.src("UPDATE prices SET extra = 'x' WHERE id = 3")  # only in the new column
    lane.src("UPDATE prices SET c = 'abc' WHERE id = 4")  # in the retyped one

    result = lane.run("run")

    assert result.code == 0, result.stderr
    # (every row of T is compared once a column is added: the destination may hold a value
    # where T's is NULL)
    assert result.report["delta"]["update"] == 100
    assert result.report["apply"]["updated"] == 2
    assert lane.table_text("destination") == lane.table_text("source")
