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
-- It runs as its caller (security invoker): a role that may not insert into ledger.events
-- may not append through it either, and row-level security applies as to an INSERT.
--
-- A refusal found before anything is written (a stream at another version, of another type
-- or organization, a key already used) is returned, not raised, so the caller can say which
-- stream and why; nothing is written then. Stream arguments are in the request's order;
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
    -- 'written', 'conflict', 'stream_type', 'organization_id' or 'key_used'
    out status text,
    -- refused for a stream: its index in the request (1-based)
    out stream_index integer,
    -- conflict: the stream's version (null: no stream)
    out actual_version bigint,
    -- stream_type / organization_id: what is stored
    out stored text,
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
        if found then
            if head.stream_type <> p_stream_types[i] then
                status := 'stream_type'; stream_index := i; stored := head.stream_type;
                return;
            end if;
            if head.organization_id <> p_organizations[i] then
                status := 'organization_id'; stream_index := i; stored := head.organization_id::text;
                return;
            end if;
        end if;
        if p_expected[i] is not null and coalesce(head.stream_version, 0) <> p_expected[i] then
            status := 'conflict'; stream_index := i; actual_version := head.stream_version;
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

-- Functions are executable by everyone unless revoked; this one only by writers (it runs as
-- its caller, so another role's call would fail at the insert anyway).
revoke execute on function ledger.append from public;
grant execute on function ledger.append to ledger_writer;

-- access_problems and ensure_access as before, with the writer's right to append: a restore
-- into a new cluster loses every grant to a role, this one too.
create or replace function ledger.access_problems() returns setof text
language plpgsql stable
set search_path = pg_catalog
as $$
declare
    role_name text;
    missing_role boolean := false;
    wanted record;
    schema_name text;
    read_table record;
begin
    foreach role_name in array array['ledger_writer', 'ledger_projector', 'ledger_auditor', 'ledger_api_reader'] loop
        if not exists (select 1 from pg_roles r where r.rolname = role_name) then
            missing_role := true;
            return next format('role %s does not exist', role_name);
        end if;
    end loop;
    if missing_role then
        return;
    end if;
    for wanted in
        select * from (values
            ('ledger_writer', 'ledger.events', 'select'), ('ledger_writer', 'ledger.events', 'insert'),
            ('ledger_writer', 'ledger.idempotency_keys', 'select'), ('ledger_writer', 'ledger.idempotency_keys', 'insert'),
            ('ledger_projector', 'ledger.events', 'select'),
            ('ledger_projector', 'ledger.projection_checkpoints', 'select'),
            ('ledger_projector', 'ledger.projection_checkpoints', 'insert'),
            ('ledger_projector', 'ledger.projection_checkpoints', 'update'),
            ('ledger_auditor', 'ledger.events', 'select'), ('ledger_auditor', 'ledger.projection_checkpoints', 'select'),
            ('ledger_api_reader', 'ledger.events', 'select'),
            ('ledger_api_reader', 'ledger.projection_checkpoints', 'select'),
            ('ledger_auditor', 'ledger.signed_checkpoints', 'select'),
            ('ledger_api_reader', 'ledger.signed_checkpoints', 'select'),
            ('ledger_writer', 'ledger.subject_keys', 'select'), ('ledger_writer', 'ledger.subject_keys', 'insert'),
            ('ledger_writer', 'ledger.subject_keys', 'update'),
            ('ledger_writer', 'ledger.master_key_check', 'select'), ('ledger_writer', 'ledger.master_key_check', 'insert'),
            ('ledger_projector', 'ledger.subject_keys', 'select'), ('ledger_projector', 'ledger.master_key_check', 'select'),
            ('ledger_auditor', 'ledger.subject_keys', 'select'), ('ledger_auditor', 'ledger.master_key_check', 'select')) w(role_name, object_name, privilege)
    loop
        if not has_table_privilege(wanted.role_name, wanted.object_name, wanted.privilege) then
            return next format('role %s lacks %s on %s', wanted.role_name, upper(wanted.privilege), wanted.object_name);
        end if;
    end loop;
    if not has_sequence_privilege('ledger_writer', 'ledger.events_global_position_seq', 'usage') then
        return next 'role ledger_writer lacks USAGE on ledger.events_global_position_seq';
    end if;
    if not has_function_privilege('ledger_writer', 'ledger.append(uuid[], text[], uuid[], bigint[], integer[], bigint[], uuid[], text[], integer[], text[], text, text, bytea)', 'execute') then
        return next 'role ledger_writer lacks EXECUTE on ledger.append';
    end if;
    foreach role_name in array array['ledger_writer', 'ledger_projector', 'ledger_auditor', 'ledger_api_reader'] loop
        if not has_schema_privilege(role_name, 'ledger', 'usage') then
            return next format('role %s lacks USAGE on schema ledger', role_name);
        end if;
    end loop;
    if not exists (select 1 from pg_class c where c.oid = 'ledger.events'::regclass and c.relrowsecurity) then
        return next 'row-level security is off on ledger.events';
    end if;
    foreach role_name in array array['tenant', 'service'] loop
        if not exists (select 1 from pg_policies p where p.schemaname = 'ledger' and p.tablename = 'events' and p.policyname = role_name) then
            return next format('policy %s on ledger.events is missing', role_name);
        end if;
    end loop;
    foreach schema_name in array ledger.read_schemas() loop
        foreach role_name in array array['ledger_projector', 'ledger_auditor', 'ledger_api_reader'] loop
            if not has_schema_privilege(role_name, schema_name, 'usage') then
                return next format('role %s lacks USAGE on schema %s', role_name, schema_name);
            end if;
        end loop;
        for read_table in
            select t.tablename, format('%I.%I', t.schemaname, t.tablename) as qualified, c.relrowsecurity,
                exists (select 1 from information_schema.columns i
                        where i.table_schema = t.schemaname and i.table_name = t.tablename and i.column_name = 'organization_id') as tenanted
            from pg_tables t join pg_class c on c.oid = format('%I.%I', t.schemaname, t.tablename)::regclass
            where t.schemaname = schema_name
        loop
            -- (A list of privileges asks whether any of them is held: one at a time.)
            if not (has_table_privilege('ledger_projector', read_table.qualified, 'select')
                    and has_table_privilege('ledger_projector', read_table.qualified, 'insert')
                    and has_table_privilege('ledger_projector', read_table.qualified, 'update')
                    and has_table_privilege('ledger_projector', read_table.qualified, 'delete')
                    and has_table_privilege('ledger_auditor', read_table.qualified, 'select')
                    and has_table_privilege('ledger_api_reader', read_table.qualified, 'select')) then
                return next format('the ledger roles lack their grants on %s', read_table.qualified);
            end if;
            if read_table.tenanted and not (read_table.relrowsecurity
                    and exists (select 1 from pg_policies p where p.schemaname = schema_name
                                and p.tablename = read_table.tablename and p.policyname = 'tenant')
                    and exists (select 1 from pg_policies p where p.schemaname = schema_name
                                and p.tablename = read_table.tablename and p.policyname = 'service')) then
                return next format('row-level security or its policies are missing on %s', read_table.qualified);
            end if;
        end loop;
    end loop;
end
$$;

-- Creates the ledger's group roles and grants what access_problems() checks; returns how
-- many problems there were. Needs a role that may create roles (on a new cluster, a
-- superuser) and the tables' owner.
create or replace function ledger.ensure_access() returns integer
language plpgsql
as $$
declare
    problems integer := (select count(*) from ledger.access_problems());
    role_name text;
    schema_name text;
begin
    if problems = 0 then
        return 0;
    end if;
    foreach role_name in array array['ledger_writer', 'ledger_projector', 'ledger_auditor', 'ledger_api_reader'] loop
        begin
            execute format('create role %I nologin', role_name);
        exception when duplicate_object or unique_violation then
            null;
        end;
    end loop;
    grant usage on schema ledger to ledger_writer, ledger_projector, ledger_auditor, ledger_api_reader;
    grant select, insert on ledger.events to ledger_writer;
    grant select, insert on ledger.idempotency_keys to ledger_writer;
    grant usage, select on sequence ledger.events_global_position_seq to ledger_writer;
    grant execute on function ledger.append to ledger_writer;
    grant select on ledger.events to ledger_projector, ledger_auditor, ledger_api_reader;
    grant select, insert, update, delete on ledger.projection_checkpoints to ledger_projector;
    grant select on ledger.projection_checkpoints to ledger_auditor, ledger_api_reader;
    grant select on ledger.signed_checkpoints to ledger_auditor, ledger_api_reader;
    grant select, insert, update on ledger.subject_keys to ledger_writer;
    grant select, insert on ledger.master_key_check to ledger_writer;
    grant select on ledger.subject_keys, ledger.master_key_check to ledger_projector, ledger_auditor;
    alter table ledger.events enable row level security;
    drop policy if exists tenant on ledger.events;
    create policy tenant on ledger.events for select to ledger_api_reader using (organization_id = ledger.current_organization());
    drop policy if exists service on ledger.events;
    create policy service on ledger.events to ledger_writer, ledger_projector, ledger_auditor using (true) with check (true);
    foreach schema_name in array ledger.read_schemas() loop
        perform ledger.grant_read_schema(schema_name);
    end loop;
    return problems;
end
$$;
