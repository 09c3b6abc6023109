"""A make-believe event lane for the demo: it changes the source and delivers most changes.

Each change is made in the source (``shop.prices``); with probability ``delivery`` the same
row is written to the destination (``warehouse.prices``), the way a CDC consumer would.
The rest are "dropped events" — the drift tablesync exists to correct.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import psycopg


@dataclass
class LaneStats:
    changes: int = 0
    delivered: int = 0
    dropped: int = 0


def run_events(uri: str, changes: int, delivery: float, seed: int, max_id: int) -> LaneStats:
    """Make ``changes`` source changes (90% updates, 5% inserts, 5% deletes) and deliver a
    ``delivery`` fraction of them to the destination. Returns what happened."""
    rng = random.Random(seed)
    stats = LaneStats()
    with psycopg.connect(uri, autocommit=False) as conn:
        for start in range(0, changes, 500):
            with conn.transaction():
                for _ in range(min(500, changes - start)):
                    roll = rng.random()
                    deliver = rng.random() < delivery
                    if roll < 0.90:
                        key = rng.randint(1, max_id)
                        row = conn.execute(
                            "UPDATE shop.prices SET price = round((random() * 500)::numeric, 2),"
                            " updated_at = clock_timestamp(), version = version + 1 "
                            "WHERE id = %s RETURNING *", (key,)).fetchone()
                    elif roll < 0.95:
                        row = conn.execute(
                            "INSERT INTO shop.prices SELECT max(id) + 1, 'SKU-' || max(id) + 1,"
                            " 9.99, 'EUR', 'new product', clock_timestamp(), 1 FROM shop.prices "
                            "RETURNING *").fetchone()
                    else:
                        key = rng.randint(1, max_id)
                        gone = conn.execute("DELETE FROM shop.prices WHERE id = %s RETURNING id",
                                            (key,)).fetchone()
                        if gone and deliver:
                            conn.execute("DELETE FROM warehouse.prices WHERE id = %s", gone)
                        row = None
                        stats.changes += 1 if gone else 0
                        stats.delivered += 1 if gone and deliver else 0
                        stats.dropped += 1 if gone and not deliver else 0
                        continue
                    if row is None:
                        continue
                    stats.changes += 1
                    if deliver:
                        conn.execute(
                            "INSERT INTO warehouse.prices VALUES (%s, %s, %s, %s, %s, %s, %s) "
                            "ON CONFLICT (id) DO UPDATE SET sku = EXCLUDED.sku, "
                            "price = EXCLUDED.price, currency = EXCLUDED.currency, "
                            "title = EXCLUDED.title, updated_at = EXCLUDED.updated_at, "
                            "version = EXCLUDED.version", row)
                        stats.delivered += 1
                    else:
                        stats.dropped += 1
    return stats
