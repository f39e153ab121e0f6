"""The SQL the PostgreSQL store speaks (``postgres.PostgresStore``): its
statements, with the schema and table names filled in once, and the
migrations that bring a schema of any earlier version to this one's."""

from __future__ import annotations

import secrets
from collections.abc import Callable


class Statements:
    """The store's SQL, with its schema and table names filled in once."""

    def __init__(self, schema: str, table: str, channel: str) -> None:
        def name(suffix: str = "") -> str:
            return f'"{schema}"."{table}{suffix}"'

        self.schema = schema
        self.table = table
        self.channel = channel
        self.jobs_table = name()
        self.meta_table = name("_meta")
        self.counts_table = name("_counts")
        self.tombstones_table = name("_tombstones")
        self.trigger_function = name("_changed")
        jobs, meta = self.jobs_table, self.meta_table
        # Rows carry the epoch read in the same statement as the row.
        self.columns = (
            f"job_id, job_status, updated_at, position, (SELECT epoch FROM {meta})"
        )
        self.read = f"SELECT {self.columns}, record FROM {jobs} WHERE job_id = %s"
        self.read_many = (
            f"SELECT {self.columns}, record FROM {jobs} WHERE job_id = ANY(%s)"
        )
        # From the covering index T_updated_at, in its own order.
        self.window = (
            f"SELECT job_id, job_status, updated_at FROM {jobs}"
            " WHERE updated_at >= %s AND job_status IS NOT NULL"
            " ORDER BY updated_at, job_id"
        )
        self.kept_counts = f"SELECT status, n FROM {self.counts_table} WHERE n > 0"
        self.window_counts = (
            f"SELECT job_status, count(*) FROM {jobs}"
            " WHERE updated_at >= %s AND job_status IS NOT NULL GROUP BY job_status"
        )
        # The server's start as seconds since 1970 (the server's run, in
        # cursors): text in the session's TimeZone would differ between
        # instances set apart, and every cursor would be 410 on the other.
        self.mark = (
            "SELECT epoch, head,"
            " extract(epoch FROM pg_postmaster_start_time())::text"
            f" FROM {meta}"
        )
        # The reads of an event loop (``postgresasync``): the mark, then
        # ``read``'s columns of each job asked, none when no job is there.
        # Sent through libpq itself, so its parameter is libpq's ``$1``: the
        # ids as one text, split on spaces (no job id has one).
        self.loop_reads = (
            "SELECT m.epoch, m.head,"
            " extract(epoch FROM pg_postmaster_start_time())::text, j.job_id,"
            " j.job_status, j.updated_at, j.position, m.epoch, j.record"
            f" FROM {meta} AS m LEFT JOIN {jobs} AS j"
            " ON j.job_id = ANY(string_to_array($1, ' '))"
        )
        self.jobs = f"SELECT job_id, updated_at FROM {jobs}"
        # Every write first bumps the head: the meta row's lock, held until
        # commit, makes positions visible in the order they were given.
        bump = f"WITH m AS (UPDATE {meta} SET head = head + 1 RETURNING head)"
        insert = (
            f"{bump} INSERT INTO {jobs} AS j"
            " (job_id, job_status, updated_at, record, position)"
            " SELECT %s, %s, %s, %s, head FROM m ON CONFLICT (job_id)"
        )
        self.put = (
            f"{insert} DO UPDATE SET job_status = excluded.job_status,"
            " updated_at = excluded.updated_at, record = excluded.record,"
            " position = excluded.position"
        )
        # Both swaps answer the job's new version, from the same statement.
        self.create = (
            f"{insert} DO NOTHING RETURNING (SELECT epoch FROM {meta}), position"
        )
        # Checked again on the row as it is once the lock is held (READ
        # COMMITTED re-reads a row another writer changed meanwhile).
        self.swap = (
            f"WITH m AS (UPDATE {meta} SET head = head + 1 WHERE epoch = %s"
            f" RETURNING epoch, head) UPDATE {jobs} AS j SET job_status = %s,"
            " updated_at = %s, record = %s, position = m.head FROM m"
            " WHERE j.job_id = %s AND j.position = %s RETURNING m.epoch, m.head"
        )

        # Retention. Of some statuses: one walk of T_status_updated_at per
        # status, oldest first, each stopping at the limit, then merged.
        self.stale_some = (
            "SELECT s.* FROM unnest(%s::text[]) AS wanted(status) CROSS JOIN"
            f" LATERAL (SELECT {self.columns} FROM {jobs}"
            " WHERE job_status = wanted.status AND updated_at < %s"
            " ORDER BY updated_at, job_id LIMIT %s) AS s"
            " ORDER BY s.updated_at, s.job_id LIMIT %s"
        )
        # Of every status but some: T_updated_at in its own order.
        self.stale_other = (
            f"SELECT {self.columns} FROM {jobs} WHERE updated_at < %s"
            " AND job_status IS NOT NULL AND job_status <> ALL(%s::text[])"
            " ORDER BY updated_at, job_id LIMIT %s"
        )
        self.lock_head = f"SELECT head, epoch FROM {meta} FOR UPDATE"
        tombs = self.tombstones_table
        # The jobs still at the version read go; their tombstones take the
        # positions after the head, in the order of the batch.
        self.expire = (
            f"WITH gone AS (DELETE FROM {jobs} AS j USING unnest(%(ids)s::text[],"
            " %(positions)s::bigint[]) WITH ORDINALITY AS v(job_id, position, n)"
            " WHERE j.job_id = v.job_id AND j.position = v.position"
            " RETURNING v.n, j.job_id, j.job_status),"
            " placed AS (SELECT job_id, job_status,"
            " %(head)s + row_number() OVER (ORDER BY n) AS position FROM gone),"
            f" buried AS (INSERT INTO {tombs} AS t"
            " (job_id, status, expired_at, position)"
            " SELECT job_id, job_status, %(at)s, position FROM placed"
            " ON CONFLICT (job_id) DO UPDATE SET status = excluded.status,"
            " expired_at = excluded.expired_at, position = excluded.position"
            " RETURNING job_id, status, expired_at, position),"
            f" moved AS (UPDATE {meta} SET head = head + (SELECT count(*) FROM gone))"
            " SELECT * FROM buried ORDER BY position"
        )
        tomb_columns = "job_id, status, expired_at, position"
        self.tombstones = f"SELECT {tomb_columns} FROM {tombs} WHERE job_id = ANY(%s)"
        # The feed follows the head: the tombstones after its cursor are few.
        self.buried = (
            f"SELECT {tomb_columns} FROM {tombs} WHERE position > %s"
            " ORDER BY position LIMIT %s"
        )
        self.buried_some = (
            f"SELECT {tomb_columns} FROM {tombs} WHERE position > %s"
            " AND status = ANY(%s) ORDER BY position LIMIT %s"
        )
        self.forget = (
            f"DELETE FROM {tombs} WHERE job_id IN (SELECT job_id FROM {tombs}"
            " WHERE expired_at < %s ORDER BY expired_at LIMIT %s)"
        )

    def page(self, *, statuses: int, window: bool, records: bool) -> str:
        """A page of every status (``statuses=0``) or of that many statuses."""
        columns = self.columns + (", record" if records else "")
        where = " AND updated_at >= %s" if window else ""
        walk = (
            f"SELECT {columns} FROM {self.jobs_table} WHERE position > %s"
            f" AND job_status IS NOT NULL{where} ORDER BY position LIMIT %s"
        )
        if not statuses:
            # Walks T_position from the cursor and stops at the limit.
            return walk
        # One walk per status, merged by position (a Merge Append): each is
        # planned with its status's own frequency, so a rare status walks
        # T_status_position instead of every job after the cursor.
        one = walk.replace("job_status IS NOT NULL", "job_status = %s")
        walks = " UNION ALL ".join(f"({one})" for _ in range(statuses))
        return f"SELECT * FROM ({walks}) AS p ORDER BY position LIMIT %s"


def create_tables(sql: Statements) -> list[str]:
    jobs, meta, counts = sql.jobs_table, sql.meta_table, sql.counts_table
    index = f'"{sql.table}'
    trigger = f'"{sql.table}_changed"'
    return [
        # COLLATE "C": listings order job ids byte by byte, as every store.
        f'CREATE TABLE {jobs} (job_id text COLLATE "C" PRIMARY KEY,'
        ' job_status text COLLATE "C", updated_at double precision NOT NULL,'
        " record text NOT NULL, position bigint NOT NULL)",
        f"CREATE TABLE {meta} (id int PRIMARY KEY CHECK (id = 1),"
        " epoch text NOT NULL, head bigint NOT NULL, schema_version int NOT NULL)",
        f"INSERT INTO {meta} (id, epoch, head, schema_version)"
        f" VALUES (1, '{secrets.token_hex(6)}', 0, 0)",
        f'CREATE TABLE {counts} (status text COLLATE "C" PRIMARY KEY,'
        " n bigint NOT NULL)",
        # page: by position; by status then position.
        f'CREATE INDEX {index}_position" ON {jobs} (position)',
        f'CREATE INDEX {index}_status_position" ON {jobs} (job_status, position)',
        # window and window counts, without visiting the table's records.
        f'CREATE INDEX {index}_updated_at" ON {jobs} (updated_at, job_id)'
        " INCLUDE (job_status)",
        _change_function(sql, revives=False),
        f"CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {jobs}"
        f" FOR EACH ROW EXECUTE FUNCTION {sql.trigger_function}()",
    ]


def _change_function(sql: Statements, *, revives: bool) -> str:
    """``T_changed``: keeps the counts and notifies; with retention, an id
    written again drops its tombstone in the writing statement."""
    counts = sql.counts_table
    channel = sql.channel.replace("'", "''")
    revive = (
        f"""IF TG_OP = 'INSERT' THEN
            DELETE FROM {sql.tombstones_table} WHERE job_id = NEW.job_id;
          END IF;"""
        if revives
        else ""
    )
    return f"""CREATE OR REPLACE FUNCTION {sql.trigger_function}() RETURNS trigger
        LANGUAGE plpgsql AS $fn$
        BEGIN
          IF TG_OP <> 'INSERT' AND OLD.job_status IS NOT NULL AND (TG_OP = 'DELETE'
              OR OLD.job_status IS DISTINCT FROM NEW.job_status) THEN
            UPDATE {counts} SET n = n - 1 WHERE status = OLD.job_status;
          END IF;
          IF TG_OP <> 'DELETE' AND NEW.job_status IS NOT NULL AND (TG_OP = 'INSERT'
              OR OLD.job_status IS DISTINCT FROM NEW.job_status) THEN
            INSERT INTO {counts} AS c (status, n) VALUES (NEW.job_status, 1)
              ON CONFLICT (status) DO UPDATE SET n = c.n + 1;
          END IF;
          {revive}
          PERFORM pg_notify('{channel}', '');
          RETURN NULL;
        END $fn$"""


def _retention(sql: Statements) -> list[str]:
    jobs, tombs = sql.jobs_table, sql.tombstones_table
    index = f'"{sql.table}'
    return [
        f'CREATE TABLE {tombs} (job_id text COLLATE "C" PRIMARY KEY,'
        ' status text COLLATE "C" NOT NULL, expired_at double precision NOT NULL,'
        " position bigint NOT NULL)",
        # buried: by position; forget: oldest expiries first.
        f'CREATE INDEX {index}_tombstones_position" ON {tombs} (position)',
        f'CREATE INDEX {index}_tombstones_expired_at" ON {tombs} (expired_at)',
        # stale of some statuses: oldest first within each status.
        f'CREATE INDEX {index}_status_updated_at" ON {jobs}'
        " (job_status, updated_at, job_id)",
        _change_function(sql, revives=True),
    ]


#: MIGRATIONS[v] takes the schema from version v to v + 1.
MIGRATIONS: tuple[Callable[[Statements], list[str]], ...] = (
    create_tables,
    _retention,
)
SCHEMA_VERSION = len(MIGRATIONS)
