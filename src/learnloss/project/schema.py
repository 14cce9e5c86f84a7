"""The schema of a project store: its tables, how an older store is upgraded, and what marks a store as learnloss's.

:data:`MIGRATIONS` is the schema: ``MIGRATIONS[v]`` takes a store from schema version ``v`` to ``v + 1``, and
:data:`SCHEMA_VERSION` (SQLite's ``user_version`` of a current store) is their number. Every store of version 1 or
later has the tables :data:`TABLES`, and SQLite's ``application_id`` of every learnloss store is
:data:`APPLICATION_ID`. :data:`KINDS` are the kinds a store records. Only data: nothing here opens a database.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["APPLICATION_ID", "KINDS", "MIGRATIONS", "SCHEMA_VERSION", "TABLES", "Kind"]

#: SQLite's ``PRAGMA application_id`` of every learnloss store (the ASCII bytes ``LNLS``, big-endian): tells a
#: learnloss store from any other SQLite database without reading its tables.
APPLICATION_ID = 0x4C4E4C53

#: The kinds of store: a labeling project (``learnloss init``) and a simulated run folder (``learnloss run --out``).
KINDS = ("labeling", "simulation")
Kind = Literal["labeling", "simulation"]

#: The tables of schema version 1 and later; a database without them is not a learnloss store.
TABLES = frozenset({"meta", "classes", "items", "imports", "cycles", "labels", "queries"})

#: ``MIGRATIONS[v]`` takes a store from schema version ``v`` to ``v + 1``.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE classes (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL UNIQUE,
        split TEXT NOT NULL CHECK (split IN ('pool', 'test'))
    );
    CREATE TABLE imports (
        id INTEGER PRIMARY KEY,
        file_name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        format TEXT NOT NULL,
        rows INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE cycles (
        cycle INTEGER PRIMARY KEY CHECK (cycle >= 0),
        status TEXT NOT NULL CHECK (status IN ('trained', 'queried')),
        config TEXT NOT NULL,
        metrics TEXT NOT NULL,
        label_fingerprint TEXT NOT NULL,
        checkpoint TEXT,
        checkpoint_sha256 TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE labels (
        id INTEGER PRIMARY KEY,
        item_id INTEGER NOT NULL REFERENCES items(id),
        class_id INTEGER NOT NULL REFERENCES classes(id),
        cycle INTEGER,
        strategy TEXT,
        score REAL,
        rank INTEGER,
        source TEXT NOT NULL,
        import_id INTEGER REFERENCES imports(id),
        created_at TEXT NOT NULL,
        current INTEGER NOT NULL DEFAULT 1 CHECK (current IN (0, 1)),
        superseded_by INTEGER REFERENCES labels(id)
    );
    CREATE UNIQUE INDEX labels_one_current ON labels(item_id) WHERE current = 1;
    CREATE TABLE queries (
        cycle INTEGER NOT NULL REFERENCES cycles(cycle),
        item_id INTEGER NOT NULL REFERENCES items(id),
        score REAL,
        rank INTEGER NOT NULL,
        strategy TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'labeled')),
        prediction TEXT,
        confidence REAL,
        PRIMARY KEY (cycle, item_id)
    );
    CREATE INDEX queries_open ON queries(status);
    """,
    # v2: targets that are not a class (a regression vector; later boxes, keypoints) are stored as JSON in
    # labels.target, so class_id becomes optional; every label has one or the other.
    """
    CREATE TABLE labels_v2 (
        id INTEGER PRIMARY KEY,
        item_id INTEGER NOT NULL REFERENCES items(id),
        class_id INTEGER REFERENCES classes(id),
        cycle INTEGER,
        strategy TEXT,
        score REAL,
        rank INTEGER,
        source TEXT NOT NULL,
        import_id INTEGER REFERENCES imports(id),
        created_at TEXT NOT NULL,
        current INTEGER NOT NULL DEFAULT 1 CHECK (current IN (0, 1)),
        superseded_by INTEGER REFERENCES labels_v2(id),
        target TEXT,
        CHECK (class_id IS NOT NULL OR target IS NOT NULL)
    );
    INSERT INTO labels_v2 (id, item_id, class_id, cycle, strategy, score, rank, source, import_id, created_at,
                           current, superseded_by)
        SELECT id, item_id, class_id, cycle, strategy, score, rank, source, import_id, created_at, current,
               superseded_by FROM labels;
    DROP INDEX labels_one_current;
    DROP TABLE labels;
    ALTER TABLE labels_v2 RENAME TO labels;
    CREATE UNIQUE INDEX labels_one_current ON labels(item_id) WHERE current = 1;
    """,
    # v3: items are retired, never deleted (retired_at and retired_reason; NULL = active), and a query of a
    # retired item is no longer open: queries.status may also be 'retired'.
    """
    ALTER TABLE items ADD COLUMN retired_at TEXT;
    ALTER TABLE items ADD COLUMN retired_reason TEXT;
    CREATE TABLE queries_v3 (
        cycle INTEGER NOT NULL REFERENCES cycles(cycle),
        item_id INTEGER NOT NULL REFERENCES items(id),
        score REAL,
        rank INTEGER NOT NULL,
        strategy TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'labeled', 'retired')),
        prediction TEXT,
        confidence REAL,
        PRIMARY KEY (cycle, item_id)
    );
    INSERT INTO queries_v3 (cycle, item_id, score, rank, strategy, status, prediction, confidence)
        SELECT cycle, item_id, score, rank, strategy, status, prediction, confidence FROM queries;
    DROP INDEX queries_open;
    DROP TABLE queries;
    ALTER TABLE queries_v3 RENAME TO queries;
    CREATE INDEX queries_open ON queries(status);
    """,
    # v4: a label from Label Studio records the annotation that gave it (labels.annotation_id) and that annotation's
    # time (labels.annotated_at: its updated_at, else its created_at, ISO 8601 in UTC), so that an older annotation
    # delivered later never replaces it (learnloss.project.labelstudio_reader). NULL for every other label.
    """
    ALTER TABLE labels ADD COLUMN annotation_id TEXT;
    ALTER TABLE labels ADD COLUMN annotated_at TEXT;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
