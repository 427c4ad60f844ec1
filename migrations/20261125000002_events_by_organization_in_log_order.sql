-- An organization's events are paged in the log's gap-free order, (transaction_id,
-- global_position), like the projectors read: this index serves it (the one it replaces
-- served position order, which misses events that commit late). No index is added: an
-- append writes as many as before.
drop index ledger.events_organization;
create index events_organization_order on ledger.events (organization_id, transaction_id, global_position);
