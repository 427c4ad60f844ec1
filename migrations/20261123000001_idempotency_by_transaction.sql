-- An idempotency key now records the id of the transaction that appended its events, and a
-- repeated request's result is read back from those events, instead of a stored copy of
-- the result (for a batch of 30,000 events that copy listed every position and stream head:
-- a twentieth of the append's time). Keys recorded before keep their stored result.
alter table ledger.idempotency_keys add column transaction_id xid8;
alter table ledger.idempotency_keys alter column result drop not null;
alter table ledger.idempotency_keys
    add constraint idempotency_keys_result_or_transaction check (result is not null or transaction_id is not null);
