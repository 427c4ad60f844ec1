-- The log as a transparency log (RFC 9162): a Merkle tree over every event, in the order
-- the gap-free readers read, and signed checkpoints of it.
--
-- transparency.* is written by the log_tree projection (ledger-projections), like any read
-- schema: one batch of leaves and its checkpoint per transaction. A leaf is an event's
-- stored hash. The tree keeps the hash of every complete subtree at every level at its
-- stored-hash index (golang.org/x/mod/sumdb/tlog, Crosby and Wallach's layout): the n-th
-- leaf adds 1 + (trailing ones of n) hashes, about two per event, written in index order;
-- they are packed 256 to a row (tree_hashes.chunk = index / 256), so a batch rewrites the
-- last row and adds a few, and any root or proof reads O(log n) hashes from a few rows. Which
-- leaf an event is follows from leaf_ranges, one row per batch (its first leaf, its first and
-- last event in log order). See ledger-store/src/tree.rs.
--
-- ledger.signed_checkpoints keeps the checkpoints the operator's key signed (C2SP
-- tlog-checkpoint in a signed note). The key itself is never stored here; the public key
-- is, beside each note, so that the API can serve it.

create schema transparency;

create table transparency.tree_hashes (
    chunk  bigint primary key check (chunk >= 0),
    -- The hashes of stored-hash indexes chunk * 256 onwards, 32 bytes each, at most 256.
    hashes bytea  not null check (length(hashes) between 32 and 8192 and length(hashes) % 32 = 0)
);

-- Each batch of leaves: the events from (first_transaction_id, first_position) to (last_...)
-- in log order are leaves first_leaf to first_leaf + leaves - 1.
create table transparency.leaf_ranges (
    first_leaf           bigint primary key check (first_leaf >= 0),
    leaves               integer not null check (leaves >= 1),
    first_transaction_id xid8    not null,
    first_position       bigint  not null,
    last_transaction_id  xid8    not null,
    last_position        bigint  not null
);

create index leaf_ranges_by_last_event on transparency.leaf_ranges (last_transaction_id, last_position);

-- The tree's size and root after the last batch (one row).
create table transparency.tree_head (
    singleton boolean primary key default true check (singleton),
    size      bigint  not null check (size >= 0),
    root_hash bytea   not null check (length(root_hash) = 32)
);

create table ledger.signed_checkpoints (
    origin       text        not null,
    tree_size    bigint      not null check (tree_size >= 0),
    root_hash    bytea       not null check (length(root_hash) = 32),
    -- The signing key's id (hex, 8 digits) and verifier key (C2SP vkey: name+id+base64).
    key_id       text        not null,
    verifier_key text        not null,
    -- The whole signed note, exactly as signed.
    note         text        not null,
    signed_at    timestamptz not null default now(),
    primary key (origin, key_id, tree_size)
);

-- The latest, and the one of a size.
create index signed_checkpoints_by_size on ledger.signed_checkpoints (tree_size desc, signed_at desc);

comment on table ledger.signed_checkpoints is
    'Signed tree heads of the log (payroll-ledger checkpoint); copies belong outside the database too.';

create or replace function ledger.read_schemas() returns text[]
language sql immutable
as $$ select array['organization', 'employee', 'wallet', 'payroll', 'transaction', 'notification', 'compliance', 'transparency'] $$;

select ledger.grant_read_schema('transparency');
grant select on ledger.signed_checkpoints to ledger_auditor, ledger_api_reader;

-- access_problems and ensure_access as before, with the signed checkpoints' grants.
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
            ('ledger_api_reader', 'ledger.signed_checkpoints', 'select')) w(role_name, object_name, privilege)
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
    grant select on ledger.events to ledger_projector, ledger_auditor, ledger_api_reader;
    grant select, insert, update, delete on ledger.projection_checkpoints to ledger_projector;
    grant select on ledger.projection_checkpoints to ledger_auditor, ledger_api_reader;
    grant select on ledger.signed_checkpoints to ledger_auditor, ledger_api_reader;
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
