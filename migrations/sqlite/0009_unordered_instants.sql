-- SQLite compares instants as text, and only sqsbeat's own fixed-width
-- UTC form (2026-11-28T10:00:00.000000Z) sorts as time. A pending row
-- written by hand in another form ('2026-11-28T12:00:00+02:00', no
-- fraction, 'infinity') would be claimed hours late or never. Each claim
-- first rewrites such rows in that form, or marks them failed when they
-- hold no instant it can order; this index finds them without reading
-- every pending row. The pattern is store::sqlite::codec::GLOB.
CREATE INDEX jobs_pending_unordered ON jobs (id)
    WHERE status = 'pending'
      AND (due_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
           OR retry_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z');
