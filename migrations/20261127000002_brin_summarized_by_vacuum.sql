-- The time index's new ranges summarized by vacuum, not by a work item per range (issue #20).
--
-- events_recorded_at (BRIN, migration 20261126000010) had autosummarize on: every time the
-- log filled a new range of 128 pages, its INSERT or COPY asked autovacuum for a work item.
-- Autovacuum keeps 256 such items for the whole cluster and takes them at most once per
-- naptime, so a payroll run (a 10,000-employee run writes ~150 ranges in seconds) filled the
-- queue and every later range logged "request for BRIN range summarization for index
-- events_recorded_at page N was not recorded": 806 LOG lines in one benchmark session, and
-- those ranges stayed unsummarized until the next vacuum anyway.
--
-- Now vacuum summarizes them (a BRIN index's vacuum summarizes every range not yet
-- summarized), and autovacuum visits the log every 50,000 appended events instead of after
-- 20 % of its size (the insert-driven default): on an append-only table it reads only the
-- pages written since its last visit. An unsummarized range is always read by a time-range
-- query (never skipped), so answers are unchanged; at most ~50,000 events are read that a
-- summary would have let it skip.
alter index ledger.events_recorded_at set (autosummarize = off);
alter table ledger.events set (autovacuum_vacuum_insert_threshold = 50000, autovacuum_vacuum_insert_scale_factor = 0);
