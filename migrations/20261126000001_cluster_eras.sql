-- Log order that survives a move to another PostgreSQL cluster.
--
-- Readers order the log by (transaction_id, global_position) and read only below the oldest
-- running transaction. Transaction ids are a cluster's own counter: a dump restored into a
-- new cluster keeps the old cluster's ids in ledger.events while the new cluster hands out
-- smaller ones, so new events sorted before the restored ones, behind every checkpoint, and
-- were never projected (and the horizon hid restored events from rebuilds).
--
-- Now the stored transaction id is the cluster's id plus an offset of the cluster's *era*.
-- An era is begun (ledger.begin_era, run by every start of the ledger) when the ledger
-- first runs on a cluster: its offset puts every id it writes above every id stored so far.
-- Everything stored before an era began is committed (it was restored), so it is all below
-- the new era's horizon (the oldest running transaction's id plus the offset) and readable
-- at once, in its old order, before anything the new era writes. The first era of an
-- existing database has offset 0: no event is rewritten and every stored id keeps its
-- meaning. A cluster is known by pg_control_system().system_identifier; the current era is
-- the latest, and only when it was begun on this cluster (a dump taken in era 2 on cluster B
-- and restored into cluster A, where era 1 was, begins era 3). Writing or reading the log
-- in a cluster without its era fails with SQLSTATE 55000 saying what to run.

create table ledger.eras (
    era               integer     primary key check (era >= 1),
    system_identifier bigint      not null,
    -- Added to this cluster's transaction ids for what the era writes.
    xid_offset        numeric(20) not null check (xid_offset >= 0),
    -- The log's sequence when the era began (events after it are the era's).
    first_position    bigint      not null,
    began_at          timestamptz not null default now()
);

comment on table ledger.eras is
    'One row per PostgreSQL cluster the ledger has run on, in order; see ledger.begin_era.';

-- The offset of the era this cluster writes in; raises when the latest era is another
-- cluster's (the database was restored or copied here and the ledger has not started since).
create function ledger.current_era_offset() returns numeric
language plpgsql stable security definer
set search_path = pg_catalog
as $$
declare
    latest record;
begin
    select e.system_identifier, e.xid_offset into latest from ledger.eras e order by e.era desc limit 1;
    if not found or latest.system_identifier <> (select c.system_identifier from pg_control_system() c) then
        raise exception 'the ledger has not begun its era on this PostgreSQL cluster (the database was restored or copied from another cluster)'
            using errcode = 'object_not_in_prerequisite_state',
                  hint = 'run `payroll-ledger migrate` (or start the server) once with the database owner: it begins the era; then reads and writes go on';
    end if;
    return latest.xid_offset;
end
$$;

-- The transaction id the log stores for the current transaction.
create function ledger.current_transaction_id() returns xid8
language sql stable
as $$ select (pg_current_xact_id()::text::numeric + ledger.current_era_offset())::text::xid8 $$;

-- Events stored with a smaller transaction id than this are committed, and no transaction
-- still running can store one below it: the gap-free readers' horizon.
create function ledger.read_horizon() returns xid8
language sql stable
as $$ select (pg_snapshot_xmin(pg_current_snapshot())::text::numeric + ledger.current_era_offset())::text::xid8 $$;

-- Begins an era on this cluster unless the latest era is this cluster's; returns the current
-- era. The first era of a database whose stored ids are all below this cluster's horizon
-- keeps the cluster's own ids (offset 0); any other starts above every id stored.
create function ledger.begin_era() returns integer
language plpgsql
set search_path = pg_catalog
as $$
declare
    this_cluster bigint := (select c.system_identifier from pg_control_system() c);
    latest record;
    any_era boolean;
    top numeric;
    new_offset numeric;
begin
    lock table ledger.eras in exclusive mode;
    select e.era, e.system_identifier into latest from ledger.eras e order by e.era desc limit 1;
    any_era := found;
    if any_era and latest.system_identifier = this_cluster then
        return latest.era;
    end if;
    select greatest(
        (select max(e.transaction_id)::text::numeric from ledger.events e),
        (select max(k.transaction_id)::text::numeric from ledger.idempotency_keys k),
        (select max(c.transaction_id)::text::numeric from ledger.projection_checkpoints c)) into top;
    if not any_era and (top is null or top < pg_snapshot_xmin(pg_current_snapshot())::text::numeric) then
        new_offset := 0;
    else
        new_offset := coalesce(top, 0) + 1;
    end if;
    insert into ledger.eras (era, system_identifier, xid_offset, first_position)
    values (case when any_era then latest.era + 1 else 1 end, this_cluster, new_offset,
            coalesce(pg_sequence_last_value('ledger.events_global_position_seq'), 0));
    return case when any_era then latest.era + 1 else 1 end;
end
$$;

select ledger.begin_era();

alter table ledger.events alter column transaction_id set default ledger.current_transaction_id();

-- The chain check, unchanged but for the transaction id it expects: the era's.
create or replace function ledger.events_check_chain() returns trigger
language plpgsql
set jit = off
as $$
declare
    reserved bigint := coalesce(pg_sequence_last_value('ledger.events_global_position_seq'), 0);
    writing xid8 := ledger.current_transaction_id();
    bad record;
begin
    select * into bad from (
        select n.global_position, n.stream_id, n.stream_version,
            case
                when n.stream_version > 1 and p.hash is null then 'gap'
                when n.prev_hash is distinct from p.hash then 'prev_hash'
                when n.global_position <= p.global_position then 'position_order'
                when n.global_position > reserved then 'position_unreserved'
                when n.recorded_at <> now() then 'recorded_at'
                when n.transaction_id <> writing then 'transaction_id'
                when n.hash is distinct from ledger.event_hash(n.prev_hash, n.global_position, n.event_id,
                    n.organization_id, n.stream_type, n.stream_id, n.stream_version, n.event_type, n.schema_version,
                    n.payload, n.metadata, n.recorded_at) then 'hash'
            end as problem
        from inserted n
        -- One index probe per row: "limit 1" keeps the planner from turning the lookup into
        -- a join that reads the whole log (it knows nothing of the transition table's size).
        left join lateral (
            select e.hash, e.global_position from ledger.events e
            where e.stream_id = n.stream_id and e.stream_version = n.stream_version - 1
            limit 1) p on true
    ) checked
    where problem is not null
    order by global_position
    limit 1;
    if not found then
        return null;
    end if;
    raise exception '%', case bad.problem
        when 'gap' then format('stream %s has no version %s to follow: versions must be contiguous',
            bad.stream_id, bad.stream_version - 1)
        when 'prev_hash' then format('event %s of stream %s: prev_hash must be the hash of the stream''s previous event',
            bad.stream_version, bad.stream_id)
        when 'position_order' then format('event %s of stream %s: global_position %s must come after its previous event''s',
            bad.stream_version, bad.stream_id, bad.global_position)
        when 'position_unreserved' then format('event %s of stream %s: global_position %s was not reserved from ledger.events_global_position_seq',
            bad.stream_version, bad.stream_id, bad.global_position)
        when 'recorded_at' then format('event %s of stream %s: recorded_at must be the writing transaction''s time, now()',
            bad.stream_version, bad.stream_id)
        when 'transaction_id' then format('event %s of stream %s: transaction_id must be ledger.current_transaction_id()',
            bad.stream_version, bad.stream_id)
        else format('event %s of stream %s: hash must be ledger.event_hash(prev_hash, the event''s fields)',
            bad.stream_version, bad.stream_id)
        end
        using errcode = 'check_violation';
end
$$;

-- Roles, grants and row-level security, checked and repaired at every start. Roles are
-- cluster-wide and a dump does not carry them: restored into a new cluster, every GRANT and
-- policy naming one fails, and the service cannot read. ledger.access_problems() lists what
-- is missing (for /ready), ledger.ensure_access() creates and grants it again.

-- The read schemas, whose tables the projector writes and the readers read.
create function ledger.read_schemas() returns text[]
language sql immutable
as $$ select array['organization', 'employee', 'wallet', 'payroll', 'transaction', 'notification', 'compliance'] $$;

create function ledger.access_problems() returns setof text
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
            ('ledger_api_reader', 'ledger.projection_checkpoints', 'select')) w(role_name, object_name, privilege)
    loop
        if not has_table_privilege(wanted.role_name, wanted.object_name, wanted.privilege) then
            return next format('role %s lacks %s on %s', wanted.role_name, upper(wanted.privilege), wanted.object_name);
        end if;
    end loop;
    if not has_sequence_privilege('ledger_writer', 'ledger.events_global_position_seq', 'usage') then
        return next 'role ledger_writer lacks USAGE on ledger.events_global_position_seq';
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
create function ledger.ensure_access() returns integer
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
    grant select on ledger.events to ledger_projector, ledger_auditor, ledger_api_reader;
    grant select, insert, update, delete on ledger.projection_checkpoints to ledger_projector;
    grant select on ledger.projection_checkpoints to ledger_auditor, ledger_api_reader;
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
