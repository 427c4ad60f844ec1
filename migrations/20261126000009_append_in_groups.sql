-- Concurrent appends committed together.
--
-- Sixteen commands appending at once to sixteen streams each paid a transaction of its own:
-- a commit, a WAL flush to wait for, the chain check's setup and the era's transaction id.
-- ledger.append_group takes the appends that are waiting in one process at one moment (the
-- store's group commit, ledger-store/src/append/group.rs) and writes them in one
-- transaction with one INSERT, which the chain check verifies in one pass. Each append (a
-- "member") keeps its own outcome: one refused does not refuse the others.
--
-- A member is written exactly as ledger.append writes it: the same locks, head checks,
-- positions, hash chain, idempotency key. What differs is waiting. The group never waits for
-- a stream's or a key's lock: it tries it, and a member whose lock another transaction holds
-- (or whose stream or key an earlier member of the group has) is answered 'busy', written
-- nothing, and is appended alone by the store, which waits for the lock. So one slow writer
-- of one stream (a payroll calculation) never holds up the group, and a group cannot take
-- part in a deadlock: the only lock it waits for is the whole log's shared lock, taken, as
-- by every append, after the keys and before the streams.
--
-- Members are listed in order: p_member_streams[m] streams each, with p_metadata[m],
-- p_idempotency_keys[m] and p_request_hashes[m]; streams member after member (p_counts[s]
-- events each, p_lock_keys[s] the store's lock key for the stream); events stream after
-- stream. One row is returned per member, in order: 'written' (with each event's position
-- and each stream's first new version), 'refused' (the stream's 1-based index in the member
-- and its stored head), 'key_used' or 'busy' (nothing written for it).
create function ledger.append_group(
    p_member_streams integer[], p_metadata text[], p_idempotency_keys text[], p_request_hashes bytea[],
    p_organizations uuid[], p_stream_types text[], p_stream_ids uuid[], p_expected bigint[], p_counts integer[],
    p_lock_keys bigint[],
    p_event_ids uuid[], p_event_types text[], p_schema_versions integer[], p_payloads text[])
returns table (member integer, status text, stream_index integer, stored_version bigint, stored_type text,
    stored_organization uuid, positions bigint[], first_versions bigint[])
language plpgsql
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
    member_count integer := coalesce(array_length(p_member_streams, 1), 0);
    stream_count integer := coalesce(array_length(p_stream_ids, 1), 0);
    event_count integer := coalesce(array_length(p_event_ids, 1), 0);
    -- Per member: its first stream; whether it holds its key's and its streams' locks.
    first_stream integer[] := array_fill(0, array[member_count]);
    free boolean[];
    -- Per stream: its member and its first event.
    stream_member integer[] := array_fill(0, array[stream_count]);
    first_event integer[] := array_fill(0, array[stream_count]);
    s integer := 1;
    e integer := 1;
begin
    if member_count = 0 or array_length(p_metadata, 1) is distinct from member_count
        or array_length(p_idempotency_keys, 1) is distinct from member_count
        or array_length(p_request_hashes, 1) is distinct from member_count
        or array_length(p_counts, 1) is distinct from stream_count
        or array_length(p_lock_keys, 1) is distinct from stream_count then
        raise exception 'ledger.append_group: the member arrays need % entries and the stream arrays %',
            member_count, stream_count using errcode = 'invalid_parameter_value';
    end if;
    for m in 1 .. member_count loop
        if p_member_streams[m] is null or p_member_streams[m] < 1 or s + p_member_streams[m] - 1 > stream_count then
            raise exception 'ledger.append_group: member % lists no stream or more than given', m
                using errcode = 'invalid_parameter_value';
        end if;
        first_stream[m] := s;
        for k in 1 .. p_member_streams[m] loop
            if p_counts[s] is null or p_counts[s] < 1 then
                raise exception 'ledger.append_group: stream % lists no event', s using errcode = 'invalid_parameter_value';
            end if;
            stream_member[s] := m;
            first_event[s] := e;
            e := e + p_counts[s];
            s := s + 1;
        end loop;
    end loop;
    if s - 1 <> stream_count or e - 1 <> event_count then
        raise exception 'ledger.append_group: % streams and % events listed, % and % given', s - 1, e - 1,
            stream_count, event_count using errcode = 'invalid_parameter_value';
    end if;
    -- The keys' locks, then the whole log's shared lock, then the streams' (the order of
    -- every append). A key or stream lock is tried, never waited for; a member whose key or
    -- stream an earlier member has is not tried.
    select array_agg(locked.free order by locked.m) into free
    from (select t.m, case when t.key is null then true
                           when t.m > t.first then false
                           else pg_try_advisory_xact_lock(1279607881, hashtext(t.key)) end as free
          from (select k.key, k.m, min(k.m) over (partition by k.key) as first
                from unnest(p_idempotency_keys) with ordinality k(key, m)) t) locked;
    perform pg_advisory_xact_lock_shared(1279607879, 0);
    select array_agg(coalesce(locked.free, false) order by g.m) into free
    from generate_series(1, member_count) g(m)
    left join (
        select t.m, bool_and(case when t.m > t.first then false else pg_try_advisory_xact_lock(t.lock_key) end) as free
        from (select st.m, st.lock_key, min(st.m) over (partition by st.id) as first
              from (select u.id, u.lock_key, stream_member[u.s] as m
                    from unnest(p_stream_ids, p_lock_keys) with ordinality u(id, lock_key, s)) st
              where free[st.m]) t
        group by t.m) locked on locked.m = g.m;
    -- The rest in one statement, whose snapshot is taken now that the locks are held: the
    -- heads, each member's outcome, the positions, the chain, the rows and the keys.
    return query
    with recursive
    heads as (
        select h.s, stream_member[h.s] as m, h.stream_version, h.stream_type, h.organization_id, h.hash,
            (h.stream_version is not null
                and (h.stream_type <> p_stream_types[h.s] or h.organization_id <> p_organizations[h.s]))
            or (p_expected[h.s] is not null and coalesce(h.stream_version, 0) <> p_expected[h.s]) as refused
        from (select st.s::integer as s, head.*
              from unnest(p_stream_ids) with ordinality st(id, s)
              left join lateral (
                  select ev.stream_version, ev.stream_type, ev.organization_id, ev.hash from ledger.events ev
                  where free[stream_member[st.s]] and ev.stream_id = st.id
                  order by ev.stream_version desc limit 1) head on true) h
    ),
    outcomes as (
        select g.m, case
            when not free[g.m] then 'busy'
            -- One index probe per member (limit 1: never a hashed scan of every key).
            when p_idempotency_keys[g.m] is not null and (
                select true from ledger.idempotency_keys used where used.idempotency_key = p_idempotency_keys[g.m]
                limit 1) then 'key_used'
            when exists (select 1 from heads h where h.m = g.m and h.refused) then 'refused'
            else 'written' end as outcome
        from generate_series(1, member_count) g(m)
    ),
    written as (
        select h.s, h.stream_version as head_version, h.hash as head_hash, x.j, x.j - first_event[h.s] + 1 as n,
            row_number() over (order by x.j) as rn
        from heads h
        join outcomes o on o.m = h.m and o.outcome = 'written'
        cross join lateral generate_series(first_event[h.s], first_event[h.s] + p_counts[h.s] - 1) x(j)
    ),
    reserved as (
        select array_agg(r.p order by r.p) as reserved_positions
        from (select nextval('ledger.events_global_position_seq') as p from written) r
    ),
    chained as (
        select w.s, w.j, w.n, w.rn, coalesce(w.head_version, 0) + 1 as version, w.head_hash as previous, d.payload,
            d.metadata,
            ledger.event_hash(w.head_hash, r.reserved_positions[w.rn], p_event_ids[w.j], p_organizations[w.s],
                p_stream_types[w.s], p_stream_ids[w.s], coalesce(w.head_version, 0) + 1, p_event_types[w.j],
                p_schema_versions[w.j], d.payload, d.metadata, now()) as hash
        from written w
        cross join reserved r
        cross join lateral (select p_payloads[w.j]::jsonb as payload, p_metadata[stream_member[w.s]]::jsonb as metadata) d
        where w.n = 1
        union all
        select w.s, w.j, w.n, w.rn, c.version + 1, c.hash, d.payload, d.metadata,
            ledger.event_hash(c.hash, r.reserved_positions[w.rn], p_event_ids[w.j], p_organizations[w.s],
                p_stream_types[w.s], p_stream_ids[w.s], c.version + 1, p_event_types[w.j], p_schema_versions[w.j],
                d.payload, d.metadata, now())
        from chained c
        join written w on w.s = c.s and w.n = c.n + 1
        cross join reserved r
        cross join lateral (select p_payloads[w.j]::jsonb as payload, c.metadata as metadata) d
    ),
    inserted as (
        insert into ledger.events (transaction_id, global_position, event_id, organization_id, stream_type, stream_id,
            stream_version, event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash)
        select (select ledger.current_transaction_id()), r.reserved_positions[c.rn], p_event_ids[c.j],
            p_organizations[c.s], p_stream_types[c.s], p_stream_ids[c.s], c.version, p_event_types[c.j],
            p_schema_versions[c.j], c.payload, c.metadata, now(), c.previous, c.hash
        from chained c cross join reserved r
        order by c.rn
        returning global_position
    ),
    keys as (
        insert into ledger.idempotency_keys (idempotency_key, request_hash, transaction_id)
        select p_idempotency_keys[o.m], p_request_hashes[o.m], (select ledger.current_transaction_id())
        from outcomes o
        where o.outcome = 'written' and p_idempotency_keys[o.m] is not null
        returning idempotency_key
    )
    select o.m::integer, o.outcome,
        refusal.s - first_stream[o.m] + 1, refusal.stream_version, refusal.stream_type, refusal.organization_id,
        case when o.outcome = 'written' then (
            select array_agg(r.reserved_positions[w.rn] order by w.rn)
            from written w cross join reserved r where stream_member[w.s] = o.m) end,
        case when o.outcome = 'written' then (
            select array_agg(coalesce(h.stream_version, 0) + 1 order by h.s) from heads h where h.m = o.m) end
    from outcomes o
    left join lateral (select h.* from heads h where h.m = o.m and h.refused order by h.s limit 1) refusal
        on o.outcome = 'refused'
    order by o.m;
end
$$;

comment on function ledger.append_group is
    'Several independent appends in one transaction and one INSERT, each with its own outcome '
    '(see the migration that made it).';
