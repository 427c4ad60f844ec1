-- Fewer index entries per event (issue #20: each b-tree entry is ~70-100 bytes of WAL and an
-- index insertion on every append; pg_walinspect over 8,000 one-event appends put the log at
-- 1,366 WAL bytes per event against ~940 for the same row in a table with three indexes).
--
-- events_type (event_type, global_position): no reader of the log needs it. The audit trail by
-- event type is compliance.audit_logs (its own indexes); the events query's event_type filter
-- is applied to the organization's or the log's events in order, within a page's limit.
drop index ledger.events_type;

-- events_recorded_at: events are appended in time order (recorded_at is the writing
-- transaction's start), so a BRIN index answers the events query's time range just as well
-- from a few pages, and costs no WAL on an append (a range is summarized once it is full).
drop index ledger.events_recorded_at;
create index events_recorded_at on ledger.events using brin (recorded_at) with (autosummarize = on);
