-- An append in one statement.
--
-- A command's append took seven round trips (begin, locks, version check and reservation,
-- insert, idempotency key, commit, the pool's ping), and PostgreSQL planned the version check
-- again for each. ledger.append does the same steps in one call, in the caller's
-- transaction (or the statement's own): the same advisory locks in the same order, the
-- idempotency key's lock, each stream's head checked against its expectation, its type and
-- organization, positions reserved from the log's sequence, every event chained (the hash
-- computed here, by ledger.event_hash) and inserted by one statement, which the chain
-- check (ledger.events_check_chain) still verifies like any other, and the key recorded.
--
-- It runs as its caller (security invoker), so it needs no grant of its own: a role that may
-- not reserve positions or insert into ledger.events may not append through it either, and
-- row-level security applies as to an INSERT.
--
-- A refusal found before anything is written (a stream at another version, of another type
-- or organization, a key already used) is returned, not raised, with the refused stream's
-- stored head, so the caller can say which stream and why; nothing is written then. Stream arguments are in the request's order;
-- events are listed stream after stream, p_counts[i] of them for stream i.
--
-- p_expected: null for any version, 0 for "no stream yet", n for exactly n. p_lock_keys: the
-- streams' advisory lock keys, sorted and without repeats (the store's one definition of a
-- stream's key); null to lock the whole log exclusively (more than 64 streams).
create function ledger.append(
    p_organizations uuid[], p_stream_types text[], p_stream_ids uuid[], p_expected bigint[], p_counts integer[],
    p_lock_keys bigint[],
    p_event_ids uuid[], p_event_types text[], p_schema_versions integer[], p_payloads text[],
    p_metadata text, p_idempotency_key text, p_request_hash bytea,
    -- 'written', 'refused' (a stream's head is not what the request expects) or 'key_used'
    out status text,
    -- refused: the stream's index in the request (1-based) and its head (nulls: no stream)
    out stream_index integer,
    out stored_version bigint,
    out stored_type text,
    out stored_organization uuid,
    -- written: every event's position, in request order
    out positions bigint[],
    -- written: each stream's first new version
    out first_versions bigint[])
language plpgsql
set jit = off
as $$
declare
    stream_count integer := coalesce(array_length(p_stream_ids, 1), 0);
    event_count integer := coalesce(array_length(p_event_ids, 1), 0);
    lock_key bigint;
    head record;
    head_versions bigint[] := array[]::bigint[];
    head_hashes bytea[] := array[]::bytea[];
    writing xid8;
    metadata jsonb := p_metadata::jsonb;
    payload jsonb;
    hashes bytea[] := array[]::bytea[];
    previous_hashes bytea[] := array[]::bytea[];
    versions bigint[] := array[]::bigint[];
    payloads jsonb[] := array[]::jsonb[];
    streams integer[] := array[]::integer[];
    previous bytea;
    version bigint;
    event_index integer := 0;
begin
    if stream_count = 0 or event_count = 0 or array_length(p_counts, 1) is distinct from stream_count
        or (select sum(c) from unnest(p_counts) c) is distinct from event_count::bigint then
        raise exception 'ledger.append: % streams with counts % do not list % events', stream_count, p_counts, event_count
            using errcode = 'invalid_parameter_value';
    end if;
    -- The locks, before the transaction's first write (see ledger-store's append/mod.rs):
    -- the idempotency key's, then the whole log's shared and each stream's in sorted order,
    -- or the whole log exclusively.
    if p_idempotency_key is not null then
        perform pg_advisory_xact_lock(1279607881, hashtext(p_idempotency_key));
        if exists (select 1 from ledger.idempotency_keys k where k.idempotency_key = p_idempotency_key) then
            status := 'key_used';
            return;
        end if;
    end if;
    if p_lock_keys is null then
        perform pg_advisory_xact_lock(1279607879, 0);
    else
        perform pg_advisory_xact_lock_shared(1279607879, 0);
        foreach lock_key in array p_lock_keys loop
            perform pg_advisory_xact_lock(lock_key);
        end loop;
    end if;
    for i in 1 .. stream_count loop
        select e.stream_version, e.stream_type, e.organization_id, e.hash into head
        from ledger.events e where e.stream_id = p_stream_ids[i] order by e.stream_version desc limit 1;
        if (found and (head.stream_type <> p_stream_types[i] or head.organization_id <> p_organizations[i]))
            or (p_expected[i] is not null and coalesce(head.stream_version, 0) <> p_expected[i]) then
            status := 'refused'; stream_index := i;
            stored_version := head.stream_version; stored_type := head.stream_type;
            stored_organization := head.organization_id;
            return;
        end if;
        head_versions := head_versions || coalesce(head.stream_version, 0);
        head_hashes := head_hashes || head.hash;
    end loop;
    writing := ledger.current_transaction_id();
    select array_agg(p order by p) into positions
    from (select nextval('ledger.events_global_position_seq') p from generate_series(1, event_count)) reserved;
    first_versions := array[]::bigint[];
    for i in 1 .. stream_count loop
        previous := head_hashes[i];
        version := head_versions[i];
        first_versions := first_versions || (version + 1);
        for j in 1 .. p_counts[i] loop
            event_index := event_index + 1;
            version := version + 1;
            payload := p_payloads[event_index]::jsonb;
            previous_hashes := previous_hashes || previous;
            previous := ledger.event_hash(previous, positions[event_index], p_event_ids[event_index],
                p_organizations[i], p_stream_types[i], p_stream_ids[i], version, p_event_types[event_index],
                p_schema_versions[event_index], payload, metadata, now());
            hashes := hashes || previous;
            versions := versions || version;
            payloads := payloads || payload;
            streams := streams || i;
        end loop;
    end loop;
    insert into ledger.events (transaction_id, global_position, event_id, organization_id, stream_type, stream_id,
        stream_version, event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash)
    select writing, e.position, e.event_id, p_organizations[e.stream], p_stream_types[e.stream], p_stream_ids[e.stream],
        e.version, e.event_type, e.schema_version, e.payload, metadata, now(), e.prev_hash, e.hash
    from unnest(positions, p_event_ids, p_event_types, p_schema_versions, payloads, previous_hashes, hashes, versions,
                streams)
        as e(position, event_id, event_type, schema_version, payload, prev_hash, hash, version, stream);
    if p_idempotency_key is not null then
        insert into ledger.idempotency_keys (idempotency_key, request_hash, transaction_id)
        values (p_idempotency_key, p_request_hash, writing);
    end if;
    status := 'written';
end
$$;

comment on function ledger.append is
    'One append in one statement: locks, version checks, positions, the hash chain, the insert and the idempotency key '
    '(see the migration that made it).';

-- Readers are woken by the store after its append commits, no longer by a trigger: a
-- transaction that notifies takes a lock that serializes every notifying commit of the
-- database with its WAL flush, so concurrent appends could not share flushes (16 concurrent
-- one-event appends: ~2,100 a second with the trigger, ~3,900 without, in pgbench). Readers
-- poll as well, so a writer that bypasses the store is read at the next poll.
drop trigger events_notify on ledger.events;
drop function ledger.events_notify();

