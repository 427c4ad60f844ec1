-- Personal data sealed per data subject (crypto-shredding; ledger-store/src/vault.rs).
--
-- A subject's data key, wrapped by the operator's master key (which never enters the
-- database): the log holds only ciphertext of personal fields, so a dump of the database
-- reveals none. Erasure destroys the wrapped key (in the erasure event's own transaction) and
-- keeps the row, so that no key is made for the subject again. The API reader has no grant
-- here: it never sees a key, wrapped or not.
create table ledger.subject_keys (
    subject_id      uuid primary key,
    organization_id uuid not null,
    wrapped_key     bytea,
    created_at      timestamptz not null default now(),
    erased_at       timestamptz,
    check ((wrapped_key is null) = (erased_at is not null))
);
create index subject_keys_organization on ledger.subject_keys (organization_id);
comment on table ledger.subject_keys is
    'Data keys of data subjects, wrapped by the master key outside the database; null once erased.';

-- A known value sealed under the master key: a process with another key is refused at start.
create table ledger.master_key_check (
    singleton  boolean primary key default true check (singleton),
    sealed     bytea not null,
    created_at timestamptz not null default now()
);

grant select, insert, update on ledger.subject_keys to ledger_writer;
grant select, insert on ledger.master_key_check to ledger_writer;
grant select on ledger.subject_keys, ledger.master_key_check to ledger_projector, ledger_auditor;

-- Read tables: a person's name may be erased; the organization keeps its retention period.
alter table employee.employees alter column full_name drop not null;
alter table employee.employees add column erased_at timestamptz;
-- The person's data as the log seals it (the API opens it with the master key): read tables
-- hold no personal data in clear either. full_name and email hold only what the log itself
-- holds in clear (hires recorded before sealing).
alter table employee.employees add column personal_sealed jsonb;
alter table organization.organizations add column retention_years integer;
create index employees_terminated on employee.employees (organization_id, end_date) where erased_at is null and end_date is not null;

-- access_problems and ensure_access as before, with the key tables' grants.
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
