-- A command's append (one event to one stream) in two statements of a cached plan.
--
-- ledger.append takes any number of streams and events: about six queries and twenty
-- PL/pgSQL expressions per call, each set up again per call and per transaction. A one-event
-- append spent 0.29 ms inside it (pgbench, one client, a call per transaction) where the
-- INSERT of the same row into a copy of ledger.events costs 0.02-0.04 ms more than a raw
-- row's. Almost every command appends one event to one stream, so that shape gets a function
-- of its own: the key's lock and check (only with a key), then the log's shared lock and the
-- stream's, then ONE statement that reads the head, refuses or chains, reserves the position,
-- inserts the event and records the key. The plan is generic and kept (plan_cache_mode), so
-- it is not planned again per call. pgbench, same database, alternated: 0.44-0.56 ms against
-- 0.59-0.70 ms per append at one client, 4,624 / 5,294 against 3,485 / 3,883 appends/s at 16.
--
-- It writes exactly what ledger.append writes for that shape (the same locks in the same
-- order, head check, position from the log's sequence, ledger.event_hash over the same
-- fields, the era's transaction id, now()) and answers in the same columns, so the store
-- reads both alike: 'written' (the position and the stream's new version), 'refused' (stream
-- 1's stored head; nothing written, no position reserved) or 'key_used' (nothing written).
-- Like the other append functions it runs as ledger_appender, whose rows the chain check
-- skips, and only ledger_writer may call it (ledger.ensure_append_access, below).
create function ledger.append_one(
    p_organization uuid, p_stream_type text, p_stream_id uuid, p_expected bigint, p_lock_key bigint,
    p_event_id uuid, p_event_type text, p_schema_version integer, p_payload text,
    p_metadata text, p_idempotency_key text, p_request_hash bytea,
    out status text, out stream_index integer, out stored_version bigint, out stored_type text,
    out stored_organization uuid, out positions bigint[], out first_versions bigint[])
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set jit = off
set plan_cache_mode = force_generic_plan
as $$
begin
    if p_idempotency_key is not null then
        perform pg_advisory_xact_lock(1279607881, hashtext(p_idempotency_key));
        if exists (select 1 from ledger.idempotency_keys k where k.idempotency_key = p_idempotency_key) then
            status := 'key_used';
            return;
        end if;
    end if;
    perform pg_advisory_xact_lock_shared(1279607879, 0), pg_advisory_xact_lock(p_lock_key);
    -- A statement of its own, so that its snapshot is taken with the locks held.
    with head as (
        select h.stream_version, h.stream_type, h.organization_id, h.hash
        from (select) one
        left join lateral (
            select e.stream_version, e.stream_type, e.organization_id, e.hash from ledger.events e
            where e.stream_id = p_stream_id order by e.stream_version desc limit 1) h on true
    ), accepted as (
        -- The position is reserved (nextval) only for a row the checks let through.
        select coalesce(h.stream_version, 0) + 1 as version, h.hash as previous,
            nextval('ledger.events_global_position_seq') as position, p_payload::jsonb as payload,
            p_metadata::jsonb as metadata, ledger.current_transaction_id() as writing
        from head h
        where (h.stream_version is null or (h.stream_type = p_stream_type and h.organization_id = p_organization))
            and (p_expected is null or coalesce(h.stream_version, 0) = p_expected)
    ), inserted as (
        insert into ledger.events (transaction_id, global_position, event_id, organization_id, stream_type, stream_id,
            stream_version, event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash)
        select a.writing, a.position, p_event_id, p_organization, p_stream_type, p_stream_id, a.version, p_event_type,
            p_schema_version, a.payload, a.metadata, now(), a.previous,
            ledger.event_hash(a.previous, a.position, p_event_id, p_organization, p_stream_type, p_stream_id,
                a.version, p_event_type, p_schema_version, a.payload, a.metadata, now())
        from accepted a
        returning global_position, stream_version, transaction_id
    ), keyed as (
        insert into ledger.idempotency_keys (idempotency_key, request_hash, transaction_id)
        select p_idempotency_key, p_request_hash, i.transaction_id from inserted i where p_idempotency_key is not null
    )
    select case when i.global_position is null then 'refused' else 'written' end,
        case when i.global_position is null then 1 end, h.stream_version, h.stream_type, h.organization_id,
        case when i.global_position is not null then array[i.global_position] end,
        case when i.global_position is not null then array[i.stream_version] end
    into status, stream_index, stored_version, stored_type, stored_organization, positions, first_versions
    from head h left join inserted i on true;
end
$$;

comment on function ledger.append_one is
    'One event appended to one stream in one cached statement, as ledger.append would write it '
    '(see the migration that made it).';

select ledger.ensure_append_access();
