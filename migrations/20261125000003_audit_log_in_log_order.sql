-- The audit log pages in the log's order, (transaction_id, global_position), which is the
-- order the compliance projection applies events in: a client paging by a cursor in that
-- order never misses a row that appears late (by position it did: a row with a smaller
-- position appears after one with a larger, when its transaction committed later). The
-- index serves that paging per organization in constant time; it replaces the one by time.
alter table compliance.audit_logs add column transaction_id bigint;
update compliance.audit_logs a set transaction_id = e.transaction_id::text::int8
from ledger.events e where e.global_position = a.global_position;
alter table compliance.audit_logs alter column transaction_id set not null;
drop index compliance.audit_logs_organization;
create index audit_logs_log_order on compliance.audit_logs (organization_id, transaction_id, global_position);
