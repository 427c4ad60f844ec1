-- API keys, and tenant isolation in the database: the API reads as `ledger_api_reader`,
-- under row-level security that shows only the rows of the organization named by the
-- transaction setting `ledger.organization_id`. A handler that forgot its filter would still
-- see nothing of another organization.

create schema auth;
create table auth.api_keys (
    key_id          uuid primary key,
    organization_id uuid not null,
    role            text not null check (role in ('admin', 'processor', 'compliance', 'auditor')),
    label           text not null,
    -- SHA-256 of the secret; the secret itself is shown once, at creation, and never stored.
    secret_hash     bytea not null,
    created_at      timestamptz not null default now(),
    revoked_at      timestamptz
);
create index api_keys_organization on auth.api_keys (organization_id);

do $$
begin
    create role ledger_api_reader nologin;
exception when duplicate_object or unique_violation then
    null;
end
$$;

-- The organization of the current transaction, or null (which matches no row).
create function ledger.current_organization() returns uuid
language sql stable
as $$ select nullif(current_setting('ledger.organization_id', true), '')::uuid $$;

-- Enables row-level security on every table of a read schema, with a policy for the API
-- reader. Applied here and again after a rebuild swaps a shadow schema in.
create or replace function ledger.grant_read_schema(schema_name text) returns void
language plpgsql
as $$
declare
    read_table text;
begin
    execute format('grant usage on schema %I to ledger_projector, ledger_auditor, ledger_api_reader', schema_name);
    execute format('grant select, insert, update, delete, truncate on all tables in schema %I to ledger_projector', schema_name);
    execute format('grant select on all tables in schema %I to ledger_auditor, ledger_api_reader', schema_name);
    for read_table in select tablename from pg_tables where schemaname = schema_name loop
        if exists (select 1 from information_schema.columns c
                   where c.table_schema = schema_name and c.table_name = read_table and c.column_name = 'organization_id') then
            execute format('alter table %I.%I enable row level security', schema_name, read_table);
            execute format('drop policy if exists tenant on %I.%I', schema_name, read_table);
            execute format('create policy tenant on %I.%I for select to ledger_api_reader using (organization_id = ledger.current_organization())',
                schema_name, read_table);
            execute format('drop policy if exists service on %I.%I', schema_name, read_table);
            execute format('create policy service on %I.%I to ledger_projector, ledger_auditor using (true) with check (true)',
                schema_name, read_table);
        end if;
    end loop;
end
$$;

select ledger.grant_read_schema(schema_name)
from unnest(array['organization', 'employee', 'wallet', 'payroll', 'transaction', 'notification', 'compliance']) as s(schema_name);

-- The event log too: the API's auditors read only their organization's events.
grant usage on schema ledger to ledger_api_reader;
grant select on ledger.events to ledger_api_reader;
grant select on ledger.projection_checkpoints to ledger_api_reader;
alter table ledger.events enable row level security;
create policy tenant on ledger.events for select to ledger_api_reader using (organization_id = ledger.current_organization());
create policy service on ledger.events to ledger_writer, ledger_projector, ledger_auditor using (true) with check (true);
