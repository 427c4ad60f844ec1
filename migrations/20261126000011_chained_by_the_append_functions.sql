-- Rows the append functions chain are not checked a second time.
--
-- ledger.append and ledger.append_group compute every row's prev_hash and hash in the
-- database, from the stream's head they read under the stream's lock, with positions from
-- the log's sequence, the era's transaction id and now(): the chain check
-- (ledger.events_check_chain) then recomputed every hash and looked every previous event up
-- again, 15-35 % of a one-event append (pgbench, the trigger enabled and disabled in turn).
--
-- The functions now run as ledger_appender (security definer), a NOLOGIN role that no login
-- is made a member of (only the role that migrates, which owns the log's tables and could
-- disable their triggers anyway, when it is not a superuser: ALTER ... OWNER needs it), and
-- the check's trigger is skipped for that role alone. Every other INSERT (the store's COPY
-- and multi-row INSERT of batched appends, a writer's own statement, the table's owner) is
-- checked as before. A wrong chain can still only come from what the unique
-- (stream_id, stream_version) index refuses: a caller that skips the stream locks or reads
-- an old snapshot writes a version that exists.
--
-- Callers: execute is revoked from PUBLIC and granted to ledger_writer (and so to the
-- service's login through it); the tenant reader, the projector and the auditor may not
-- call them. The appender's rights are granted directly and its row-level security policy
-- names it, so a dump carries them; a restore (which creates the role first) or the next
-- start repairs the functions' owner (ledger.ensure_access), which --no-owner drops.

-- The check, skipped for the appender only (the condition shows in \d ledger.events).
drop trigger events_check_chain on ledger.events;
create trigger events_check_chain
    after insert on ledger.events
    referencing new table as inserted
    for each statement
    when (current_user <> 'ledger_appender'::name)
    execute function ledger.events_check_chain();

-- What the append functions need to be as described: owned by the appender, security
-- definer, callable by the writer and nobody else. One row per problem. (ledger.append_one is
-- made by the next migration; until it runs, it is listed as missing.)
create function ledger.append_access_problems() returns setof text
language plpgsql stable
set search_path = pg_catalog
as $$
declare
    role_name text;
    function_name text;
    append_function record;
begin
    if not exists (select 1 from pg_roles r where r.rolname = 'ledger_appender') then
        return next 'role ledger_appender does not exist';
        return;
    end if;
    if not (has_schema_privilege('ledger_appender', 'ledger', 'usage')
            and has_table_privilege('ledger_appender', 'ledger.events', 'select')
            and has_table_privilege('ledger_appender', 'ledger.events', 'insert')
            and has_table_privilege('ledger_appender', 'ledger.idempotency_keys', 'select')
            and has_table_privilege('ledger_appender', 'ledger.idempotency_keys', 'insert')
            and has_sequence_privilege('ledger_appender', 'ledger.events_global_position_seq', 'usage')) then
        return next 'role ledger_appender lacks its grants on the log';
    end if;
    if not exists (select 1 from pg_policies p where p.schemaname = 'ledger' and p.tablename = 'events' and p.policyname = 'appender') then
        return next 'policy appender on ledger.events is missing';
    end if;
    foreach function_name in array array['append', 'append_group', 'append_one'] loop
        select p.oid, p.prosecdef, pg_get_userbyid(p.proowner) as owner,
            -- A null ACL is the default one: PUBLIC may execute.
            p.proacl is null or exists (select 1 from aclexplode(p.proacl) a where a.grantee = 0 and a.privilege_type = 'EXECUTE') as public_may
        into append_function
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'ledger' and p.proname = function_name;
        if not found then
            return next format('function ledger.%s is missing', function_name);
            continue;
        end if;
        if append_function.owner <> 'ledger_appender' or not append_function.prosecdef then
            return next format('function ledger.%s is not a security definer owned by ledger_appender', function_name);
        end if;
        if append_function.public_may then
            return next format('PUBLIC may execute ledger.%s', function_name);
        end if;
        if exists (select 1 from pg_roles r where r.rolname = 'ledger_writer')
                and not has_function_privilege('ledger_writer', append_function.oid, 'execute') then
            return next format('role ledger_writer lacks EXECUTE on ledger.%s', function_name);
        end if;
        foreach role_name in array array['ledger_projector', 'ledger_auditor', 'ledger_api_reader'] loop
            if exists (select 1 from pg_roles r where r.rolname = role_name)
                    and has_function_privilege(role_name, append_function.oid, 'execute') then
                return next format('role %s may execute ledger.%s', role_name, function_name);
            end if;
        end loop;
    end loop;
end
$$;

-- Makes the append functions as described; the caller must own them (or be a superuser) and
-- may create roles (to make the role, or to make itself a member, which ALTER ... OWNER needs).
create function ledger.ensure_append_access() returns void
language plpgsql
set search_path = pg_catalog
as $$
declare
    function_oid oid;
begin
    begin
        create role ledger_appender nologin;
    exception when duplicate_object or unique_violation then
        null;
    end;
    grant usage on schema ledger to ledger_appender;
    grant select, insert on ledger.events to ledger_appender;
    grant select, insert on ledger.idempotency_keys to ledger_appender;
    grant usage, select on sequence ledger.events_global_position_seq to ledger_appender;
    drop policy if exists appender on ledger.events;
    create policy appender on ledger.events to ledger_appender using (true) with check (true);
    if not pg_has_role('ledger_appender', 'member') then
        execute format('grant ledger_appender to %I', current_user);
    end if;
    -- ALTER ... OWNER wants the new owner to may create in the schema (for a non-superuser).
    grant create on schema ledger to ledger_appender;
    for function_oid in
        select p.oid from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'ledger' and p.proname in ('append', 'append_group', 'append_one')
    loop
        execute format('alter function %s owner to ledger_appender', function_oid::regprocedure);
        execute format('alter function %s security definer set search_path = pg_catalog, pg_temp', function_oid::regprocedure);
        execute format('revoke execute on function %s from public', function_oid::regprocedure);
        execute format('grant execute on function %s to ledger_writer', function_oid::regprocedure);
        execute format('revoke execute on function %s from ledger_projector, ledger_auditor, ledger_api_reader',
            function_oid::regprocedure);
    end loop;
    revoke create on schema ledger from ledger_appender;
end
$$;

select ledger.ensure_append_access();

-- access_problems and ensure_access as before, and the append functions'.
alter function ledger.access_problems() rename to table_access_problems;
alter function ledger.ensure_access() rename to ensure_table_access;

create function ledger.access_problems() returns setof text
language sql stable
as $$ select * from ledger.table_access_problems() union all select * from ledger.append_access_problems() $$;

-- Returns how many problems there were (ensure_table_access counts them again: it sees the
-- append functions' problems too, and then grants what is its own).
create function ledger.ensure_access() returns integer
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
    return problems;
end
$$;

comment on function ledger.append_access_problems is
    'What ledger.append and ledger.append_group lack to run as ledger_appender, callable by the writer only.';
