-- The cluster's era checked once per run of the cluster, not once per append.
--
-- Every append (and every read horizon) asks ledger.current_era_offset() which era this
-- cluster writes in, and that asked pg_control_system() for the cluster's identifier: a read
-- of the control file from disk (open, read, checksum) on every call, 26 µs of a one-event
-- append's 240 µs in the database (a loop of calls: 10 µs of it the control file, 4 µs the
-- eras query, the rest the call).
--
-- A cluster's identifier cannot change while it runs, and the latest era only changes by
-- ledger.begin_era (after a restore) or a restore into this database. So ledger.check_era()
-- does the whole check and records its answer for this run of the cluster (keyed by
-- pg_postmaster_start_time()) and the era it checked; current_era_offset() answers from that
-- record while both still hold (same run, the same latest era) and does the whole check
-- otherwise. (Not run here: a database restored from another cluster is migrated before its
-- era begins.) The record is written only by check_era, which writes only what the whole check
-- found: no caller can forge it (no role but the owner may write the table). A dump carries
-- the record into another cluster, where the run differs and it is ignored. check_era runs
-- at every start of the ledger and on every readiness check: after PostgreSQL restarts
-- without the ledger, appends take the whole check (correct, slower) until the next one.

create table ledger.era_checked (
    -- The run of the cluster the check was made in.
    postmaster_started timestamptz primary key,
    -- The latest era when it was checked: it was this cluster's.
    era                integer     not null,
    xid_offset         numeric(20) not null
);

comment on table ledger.era_checked is
    'The era check''s answer for a run of the cluster; written by ledger.check_era() only.';

revoke all on ledger.era_checked from public;

-- The whole check: the latest era and its offset, when that era is this cluster's; raises
-- otherwise (the database was restored or copied here and the ledger has not started since).
create function ledger.era_of_this_cluster(out era integer, out xid_offset numeric)
language plpgsql stable security definer
set search_path = pg_catalog
as $$
declare
    latest record;
begin
    select e.era, e.system_identifier, e.xid_offset into latest from ledger.eras e order by e.era desc limit 1;
    if not found or latest.system_identifier <> (select c.system_identifier from pg_control_system() c) then
        raise exception 'the ledger has not begun its era on this PostgreSQL cluster (the database was restored or copied from another cluster)'
            using errcode = 'object_not_in_prerequisite_state',
                  hint = 'run `payroll-ledger migrate` (or start the server) once with the database owner: it begins the era; then reads and writes go on';
    end if;
    era := latest.era;
    xid_offset := latest.xid_offset;
end
$$;

create or replace function ledger.current_era_offset() returns numeric
language plpgsql stable security definer
set search_path = pg_catalog
as $$
declare
    recorded numeric;
begin
    select c.xid_offset into recorded from ledger.era_checked c
    where c.postmaster_started = pg_postmaster_start_time()
        and c.era = (select max(e.era) from ledger.eras e);
    if found then
        return recorded;
    end if;
    return (ledger.era_of_this_cluster()).xid_offset;
end
$$;

-- Checks that the latest era is this cluster's (raising as current_era_offset does when it is
-- not) and records the answer for this run of the cluster; returns the era.
create function ledger.check_era() returns integer
language plpgsql security definer
set search_path = pg_catalog
as $$
declare
    latest record;
begin
    select * into latest from ledger.era_of_this_cluster();
    -- Written only when it changes (a readiness check every few seconds writes nothing); two
    -- checks at once write the same row.
    if not exists (select 1 from ledger.era_checked c
                   where c.postmaster_started = pg_postmaster_start_time() and c.era = latest.era) then
        delete from ledger.era_checked c where c.postmaster_started <> pg_postmaster_start_time();
        insert into ledger.era_checked (postmaster_started, era, xid_offset)
        values (pg_postmaster_start_time(), latest.era, latest.xid_offset)
        on conflict (postmaster_started) do update set era = excluded.era, xid_offset = excluded.xid_offset;
    end if;
    return latest.era;
end
$$;

comment on function ledger.check_era is
    'Checks that the latest era is this cluster''s and records it for this run of the cluster '
    '(see the migration that made it).';

-- ledger.append_one reads the record itself, in its one statement (ledger.current_era_offset()
-- only when there is none to trust): the call it saves was most of the lookup's cost
-- (pg_stat_user_functions, one client: 205-245 µs inside append_one with the call, 25 %
-- less without). The same statement as migration 20261126000012's but for the transaction
-- id's expression. It runs as ledger_appender, which reads the two tables for it.
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
            p_metadata::jsonb as metadata, (pg_current_xact_id()::text::numeric + coalesce(
                (select c.xid_offset from ledger.era_checked c
                 where c.postmaster_started = pg_postmaster_start_time()
                     and c.era = (select max(e.era) from ledger.eras e)),
                ledger.current_era_offset()))::text::xid8 as writing
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

-- What the appender needs for it, and its repair; access_problems and ensure_access include
-- them from now on.
create function ledger.era_access_problems() returns setof text
language sql stable
set search_path = pg_catalog
as $$
    select 'role ledger_appender lacks SELECT on ledger.eras and ledger.era_checked'
    where exists (select 1 from pg_roles r where r.rolname = 'ledger_appender')
        and not (has_table_privilege('ledger_appender', 'ledger.eras', 'select')
                 and has_table_privilege('ledger_appender', 'ledger.era_checked', 'select'))
$$;

create function ledger.ensure_era_access() returns void
language sql
set search_path = pg_catalog
as $$ grant select on ledger.eras, ledger.era_checked to ledger_appender $$;

select ledger.ensure_era_access();

create or replace function ledger.access_problems() returns setof text
language sql stable
as $$
    select * from ledger.table_access_problems()
    union all select * from ledger.append_access_problems()
    union all select * from ledger.era_access_problems()
$$;

create or replace function ledger.ensure_access() returns integer
language plpgsql
as $$
declare
    problems integer := (select count(*) from ledger.access_problems());
begin
    if problems = 0 then
        return 0;
    end if;
    perform ledger.ensure_table_access();
    perform ledger.ensure_append_access();
    perform ledger.ensure_era_access();
    return problems;
end
$$;
