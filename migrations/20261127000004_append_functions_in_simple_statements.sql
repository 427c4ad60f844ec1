-- The append functions start less executor per call (issue #20).
--
-- perf over one-event ledger.append_one calls at 16 clients put 12 % of all CPU in
-- ExecutorStart: the one statement that read the head, chained, reserved and inserted was a
-- plan of CTE scans, subqueries and projections set up again on every call, for one row. And
-- ledger.append_group took its keys' and streams' locks in two statements of window
-- functions, sorts and aggregates (~0.1 ms each, set up per group) to find the members whose
-- key or stream an earlier member has.
--
-- ledger.append_one: the same locks, then the head read by one small statement, the checks
-- as PL/pgSQL expressions, the insert of one row (values, hashed by ledger.event_hash) and
-- the key's row only when there is a key. The head is read after the locks are taken, in
-- a statement of its own (read committed: its snapshot is taken then), as before. It writes
-- exactly what it wrote (the canonical form of ledger.event_hash; the tests hash every row
-- again) and answers the same columns: 'written' with the head it followed, 'refused' with
-- the stored head (nothing written, no position reserved), 'key_used'.
--
-- ledger.append_group: the same locks in the same order, tried in PL/pgSQL loops: a member
-- whose key an earlier member has, or whose stream an earlier member (holding its key) has,
-- is not tried and answers 'busy'; the rest of the function is unchanged.
--
-- Measured (pgbench -M prepared, docs/bench/pgbench/one-event-append-one.sql, 2,000 streams,
-- databases with and without this migration alternated, 8 s a run): ledger.append_one at 16
-- clients 3,782-4,144 before, 4,146-4,424 after (5 of 5 pairs, +8 %); at one client no
-- difference (the commit's flush dominates). ledger.append_group, one backend calling it in a
-- loop within one transaction: 4 members 522-742 -> 447-530 µs a call, 8 members 715-780 ->
-- 618-707 µs.
create or replace function ledger.append_one(
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
declare
    head_hash bytea;
    new_version bigint;
    new_position bigint;
    payload jsonb;
    metadata jsonb;
    writing xid8;
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
    select e.stream_version, e.stream_type, e.organization_id, e.hash
    into stored_version, stored_type, stored_organization, head_hash
    from ledger.events e where e.stream_id = p_stream_id order by e.stream_version desc limit 1;
    if (stored_version is not null and (stored_type <> p_stream_type or stored_organization <> p_organization))
        or (p_expected is not null and coalesce(stored_version, 0) <> p_expected) then
        status := 'refused';
        stream_index := 1;
        return;
    end if;
    -- The position is reserved (nextval) only for a row the checks let through.
    new_version := coalesce(stored_version, 0) + 1;
    new_position := nextval('ledger.events_global_position_seq');
    payload := p_payload::jsonb;
    metadata := p_metadata::jsonb;
    insert into ledger.events (transaction_id, global_position, event_id, organization_id, stream_type, stream_id,
        stream_version, event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash)
    values ((pg_current_xact_id()::text::numeric + coalesce(
                (select c.xid_offset from ledger.era_checked c
                 where c.postmaster_started = pg_postmaster_start_time()
                     and c.era = (select max(e.era) from ledger.eras e)),
                ledger.current_era_offset()))::text::xid8,
        new_position, p_event_id, p_organization, p_stream_type, p_stream_id, new_version, p_event_type,
        p_schema_version, payload, metadata, now(), head_hash,
        ledger.event_hash(head_hash, new_position, p_event_id, p_organization, p_stream_type, p_stream_id,
            new_version, p_event_type, p_schema_version, payload, metadata, now()))
    returning transaction_id into writing;
    if p_idempotency_key is not null then
        insert into ledger.idempotency_keys (idempotency_key, request_hash, transaction_id)
        values (p_idempotency_key, p_request_hash, writing);
    end if;
    status := 'written';
    positions := array[new_position];
    first_versions := array[new_version];
end
$$;

create or replace function ledger.append_group(
    p_member_streams integer[], p_metadata text[], p_idempotency_keys text[], p_request_hashes bytea[],
    p_organizations uuid[], p_stream_types text[], p_stream_ids uuid[], p_expected bigint[], p_counts integer[],
    p_lock_keys bigint[],
    p_event_ids uuid[], p_event_types text[], p_schema_versions integer[], p_payloads text[])
returns table (member integer, status text, stream_index integer, stored_version bigint, stored_type text,
    stored_organization uuid, positions bigint[], first_versions bigint[])
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
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
    -- Streams of earlier members that hold their keys: a later member with one is busy.
    claimed uuid[] := '{}';
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
    -- stream an earlier member has is not tried. Loops of PL/pgSQL expressions: a group has
    -- a few members (at most 256; the scans of earlier members' keys and streams are short).
    free := array_fill(true, array[member_count]);
    for m in 1 .. member_count loop
        if p_idempotency_keys[m] is not null then
            if m > 1 and p_idempotency_keys[m] = any(p_idempotency_keys[1:m - 1]) then
                free[m] := false;
            else
                free[m] := pg_try_advisory_xact_lock(1279607881, hashtext(p_idempotency_keys[m]));
            end if;
        end if;
    end loop;
    perform pg_advisory_xact_lock_shared(1279607879, 0);
    for m in 1 .. member_count loop
        if free[m] then
            for t in first_stream[m] .. first_stream[m] + p_member_streams[m] - 1 loop
                if p_stream_ids[t] = any(claimed) or not pg_try_advisory_xact_lock(p_lock_keys[t]) then
                    free[m] := false;
                    exit;
                end if;
            end loop;
            claimed := claimed || p_stream_ids[first_stream[m]:first_stream[m] + p_member_streams[m] - 1];
        end if;
    end loop;
    -- The rest in one statement, whose snapshot is taken now that the locks are held: the
    -- heads, each member's outcome, the positions, the chain, the rows and the keys. When
    -- every stream carries one event (a group of commands), each row follows its stream's
    -- stored head and no chain within the group needs walking.
    if event_count = stream_count then
        return query
        with
        writing as (select (pg_current_xact_id()::text::numeric + coalesce(
                (select c.xid_offset from ledger.era_checked c
                 where c.postmaster_started = pg_postmaster_start_time()
                     and c.era = (select max(e.era) from ledger.eras e)),
                ledger.current_era_offset()))::text::xid8 as xid),
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
            select h.s, h.m, h.stream_version as head_version, h.hash as head_hash, row_number() over (order by h.s) as rn
            from heads h
            join outcomes o on o.m = h.m and o.outcome = 'written'
        ),
        reserved as (
            select array_agg(r.p order by r.p) as reserved_positions
            from (select nextval('ledger.events_global_position_seq') as p from written) r
        ),
        inserted as (
            insert into ledger.events (transaction_id, global_position, event_id, organization_id, stream_type, stream_id,
                stream_version, event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash)
            select x.xid, r.reserved_positions[w.rn], p_event_ids[w.s], p_organizations[w.s], p_stream_types[w.s],
                p_stream_ids[w.s], coalesce(w.head_version, 0) + 1, p_event_types[w.s], p_schema_versions[w.s], d.payload,
                d.metadata, now(), w.head_hash,
                ledger.event_hash(w.head_hash, r.reserved_positions[w.rn], p_event_ids[w.s], p_organizations[w.s],
                    p_stream_types[w.s], p_stream_ids[w.s], coalesce(w.head_version, 0) + 1, p_event_types[w.s],
                    p_schema_versions[w.s], d.payload, d.metadata, now())
            from written w
            cross join reserved r
            cross join writing x
            cross join lateral (select p_payloads[w.s]::jsonb as payload, p_metadata[w.m]::jsonb as metadata) d
            order by w.rn
            returning global_position
        ),
        keys as (
            insert into ledger.idempotency_keys (idempotency_key, request_hash, transaction_id)
            select p_idempotency_keys[o.m], p_request_hashes[o.m], (select x.xid from writing x)
            from outcomes o
            where o.outcome = 'written' and p_idempotency_keys[o.m] is not null
            returning idempotency_key
        )
        select o.m::integer, o.outcome,
            refusal.s - first_stream[o.m] + 1, refusal.stream_version, refusal.stream_type, refusal.organization_id,
            case when o.outcome = 'written' then (
                select array_agg(r.reserved_positions[w.rn] order by w.rn)
                from written w cross join reserved r where w.m = o.m) end,
            case when o.outcome = 'written' then (
                select array_agg(coalesce(h.stream_version, 0) + 1 order by h.s) from heads h where h.m = o.m) end
        from outcomes o
        left join lateral (select h.* from heads h where h.m = o.m and h.refused order by h.s limit 1) refusal
            on o.outcome = 'refused'
        order by o.m;
    else
        return query
        with recursive
        writing as (select (pg_current_xact_id()::text::numeric + coalesce(
                (select c.xid_offset from ledger.era_checked c
                 where c.postmaster_started = pg_postmaster_start_time()
                     and c.era = (select max(e.era) from ledger.eras e)),
                ledger.current_era_offset()))::text::xid8 as xid),
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
            select (select w.xid from writing w), r.reserved_positions[c.rn], p_event_ids[c.j],
                p_organizations[c.s], p_stream_types[c.s], p_stream_ids[c.s], c.version, p_event_types[c.j],
                p_schema_versions[c.j], c.payload, c.metadata, now(), c.previous, c.hash
            from chained c cross join reserved r
            order by c.rn
            returning global_position
        ),
        keys as (
            insert into ledger.idempotency_keys (idempotency_key, request_hash, transaction_id)
            select p_idempotency_keys[o.m], p_request_hashes[o.m], (select w.xid from writing w)
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
    end if;
end
$$;

comment on function ledger.append_one is
    'One event appended to one stream in one call (see the migrations that made it and 20261127000004).';

comment on function ledger.append_group is
    'Several independent appends in one transaction and one INSERT, each with its own outcome '
    '(see the migrations that made it and 20261127000004).';

select ledger.ensure_append_access();
