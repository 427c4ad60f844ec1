-- A group of one-event appends written by small statements; each payload made jsonb once
-- (issue #20).
--
-- ledger.append_group, when every stream carries one event (a group of commands: almost
-- every group), was one statement of CTEs, lateral subqueries and aggregates: a plan of ~70
-- nodes set up again by ExecutorStart on every call (8 % of all CPU in a 16-task run of
-- commands, perf). It is now, after the same checks and the same locks in the same order:
-- the heads read by one statement (its snapshot taken with the locks held, as before), each
-- member's outcome decided by PL/pgSQL expressions in the same order (busy, key used,
-- refused at its first refusing stream, written), the positions reserved for the written
-- rows only (rising in stream order, as before), one INSERT of the written rows from the
-- arrays, the keys' rows only when a written member has a key, and the answers returned
-- row by row. It answers the same rows for the same members.
--
-- Both paths made each row's payload and metadata jsonb three times: the subquery that
-- cast them was inlined into the row and into each of the two uses of ledger.event_hash
-- (EXPLAIN VERBOSE shows `(v.p)::jsonb` three times). `offset 0` keeps it a subquery: once.
--
-- Backend CPU per call, one-event members to random streams of 2,000, one backend
-- (docs/bench/pgbench/group-cpu.py, 1,000 calls a round, three rounds alternated; ~215 µs of
-- each is psql's own): 1 member 370 -> 320 µs, 4 members 530 -> 480, 8 members 640 -> 600,
-- 16 members 980 -> 910; 8 members with a key each 780 -> 730.
-- The peers' harness, held-state commands at 16 tasks (8 events a group on average), four
-- pairs alternated: 7,467 / 7,564 / 7,692 / 7,833 -> 8,483 / 7,895 / 8,380 / 8,345 commands/s
-- (raw BEGIN/INSERT/COMMIT beside them 8,964-9,617).
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
    -- One event per stream: the heads, each member's outcome, the rows' positions and versions.
    head_versions bigint[];
    head_types text[];
    head_organizations uuid[];
    head_hashes bytea[];
    outcomes text[];
    refused_at integer[];
    written_count integer := 0;
    with_keys boolean := false;
    reserved bigint[];
    stream_positions bigint[];
    new_versions bigint[];
    writing_xid xid8;
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
        -- The heads, in one statement whose snapshot is taken now that the locks are held
        -- (a member that holds no lock reads none).
        select array_agg(h.stream_version order by st.s), array_agg(h.stream_type order by st.s),
            array_agg(h.organization_id order by st.s), array_agg(h.hash order by st.s)
        into head_versions, head_types, head_organizations, head_hashes
        from unnest(p_stream_ids) with ordinality st(id, s)
        left join lateral (
            select ev.stream_version, ev.stream_type, ev.organization_id, ev.hash from ledger.events ev
            where free[stream_member[st.s]] and ev.stream_id = st.id
            order by ev.stream_version desc limit 1) h on true;
        -- Each member's outcome, in the order of the checks above: busy, key used, refused
        -- (its first stream that refuses), written.
        outcomes := array_fill('written'::text, array[member_count]);
        refused_at := array_fill(0, array[member_count]);
        for m in 1 .. member_count loop
            if not free[m] then
                outcomes[m] := 'busy';
            elsif p_idempotency_keys[m] is not null
                and exists (select 1 from ledger.idempotency_keys used where used.idempotency_key = p_idempotency_keys[m]) then
                outcomes[m] := 'key_used';
            else
                for t in first_stream[m] .. first_stream[m] + p_member_streams[m] - 1 loop
                    if (head_versions[t] is not null
                            and (head_types[t] <> p_stream_types[t] or head_organizations[t] <> p_organizations[t]))
                        or (p_expected[t] is not null and coalesce(head_versions[t], 0) <> p_expected[t]) then
                        outcomes[m] := 'refused';
                        refused_at[m] := t;
                        exit;
                    end if;
                end loop;
                if outcomes[m] = 'written' then
                    written_count := written_count + p_member_streams[m];
                    with_keys := with_keys or p_idempotency_keys[m] is not null;
                end if;
            end if;
        end loop;
        if written_count > 0 then
            -- Positions reserved for the written rows only, rising in stream order.
            select array_agg(nextval('ledger.events_global_position_seq')) into reserved
            from generate_series(1, written_count);
            stream_positions := array_fill(null::bigint, array[stream_count]);
            new_versions := array_fill(null::bigint, array[stream_count]);
            e := 0;
            for t in 1 .. stream_count loop
                if outcomes[stream_member[t]] = 'written' then
                    e := e + 1;
                    stream_positions[t] := reserved[e];
                    new_versions[t] := coalesce(head_versions[t], 0) + 1;
                end if;
            end loop;
            writing_xid := (pg_current_xact_id()::text::numeric + coalesce(
                (select c.xid_offset from ledger.era_checked c
                 where c.postmaster_started = pg_postmaster_start_time()
                     and c.era = (select max(r.era) from ledger.eras r)),
                ledger.current_era_offset()))::text::xid8;
            -- Each row follows its stream's stored head. The texts are made jsonb once per row
            -- (offset 0 keeps the subquery from being inlined into each use).
            insert into ledger.events (transaction_id, global_position, event_id, organization_id, stream_type, stream_id,
                stream_version, event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash)
            select writing_xid, u.position, u.event_id, u.organization_id, u.stream_type, u.stream_id, u.version,
                u.event_type, u.schema_version, d.payload, d.metadata, now(), u.head_hash,
                ledger.event_hash(u.head_hash, u.position, u.event_id, u.organization_id, u.stream_type, u.stream_id,
                    u.version, u.event_type, u.schema_version, d.payload, d.metadata, now())
            from unnest(stream_positions, p_event_ids, p_organizations, p_stream_types, p_stream_ids, new_versions,
                    p_event_types, p_schema_versions, p_payloads, head_hashes, stream_member)
                as u(position, event_id, organization_id, stream_type, stream_id, version, event_type, schema_version,
                    payload, head_hash, m)
            cross join lateral (select u.payload::jsonb as payload, p_metadata[u.m]::jsonb as metadata offset 0) d
            where u.position is not null;
            if with_keys then
                insert into ledger.idempotency_keys (idempotency_key, request_hash, transaction_id)
                select p_idempotency_keys[k.m], p_request_hashes[k.m], writing_xid
                from generate_series(1, member_count) k(m)
                where outcomes[k.m] = 'written' and p_idempotency_keys[k.m] is not null;
            end if;
        end if;
        for m in 1 .. member_count loop
            member := m;
            status := outcomes[m];
            stream_index := null;
            stored_version := null;
            stored_type := null;
            stored_organization := null;
            positions := null;
            first_versions := null;
            if outcomes[m] = 'refused' then
                stream_index := refused_at[m] - first_stream[m] + 1;
                stored_version := head_versions[refused_at[m]];
                stored_type := head_types[refused_at[m]];
                stored_organization := head_organizations[refused_at[m]];
            elsif outcomes[m] = 'written' then
                positions := stream_positions[first_stream[m] : first_stream[m] + p_member_streams[m] - 1];
                first_versions := new_versions[first_stream[m] : first_stream[m] + p_member_streams[m] - 1];
            end if;
            return next;
        end loop;
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
            cross join lateral (select p_payloads[w.j]::jsonb as payload, p_metadata[stream_member[w.s]]::jsonb as metadata offset 0) d
            where w.n = 1
            union all
            select w.s, w.j, w.n, w.rn, c.version + 1, c.hash, d.payload, d.metadata,
                ledger.event_hash(c.hash, r.reserved_positions[w.rn], p_event_ids[w.j], p_organizations[w.s],
                    p_stream_types[w.s], p_stream_ids[w.s], c.version + 1, p_event_types[w.j], p_schema_versions[w.j],
                    d.payload, d.metadata, now())
            from chained c
            join written w on w.s = c.s and w.n = c.n + 1
            cross join reserved r
            cross join lateral (select p_payloads[w.j]::jsonb as payload, c.metadata as metadata offset 0) d
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

comment on function ledger.append_group is
    'Several independent appends in one transaction and one INSERT, each with its own outcome '
    '(see the migrations that made it and 20261127000005).';

select ledger.ensure_append_access();
