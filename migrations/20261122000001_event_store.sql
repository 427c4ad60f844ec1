-- The event store: the append-only log that is the source of truth of the payroll ledger.
--
-- Only ledger-store issues SQL against these tables. Applied migrations are never edited:
-- a change is a new migration.

-- Hashes cover the UTF-8 bytes of each field's text; lengths are counted in bytes.
do $$
begin
    if current_setting('server_encoding') <> 'UTF8' then
        raise exception 'the payroll ledger needs a UTF8 database, this one is %', current_setting('server_encoding');
    end if;
end
$$;

create schema if not exists ledger;

create table ledger.events (
    global_position bigint      generated always as identity primary key,
    -- The writing transaction. Readers order by (transaction_id, global_position) and read
    -- only below pg_snapshot_xmin, so an event that commits late is never skipped.
    transaction_id  xid8        not null default pg_current_xact_id(),
    event_id        uuid        not null unique,
    organization_id uuid        not null,
    stream_type     text        not null check (stream_type <> ''),
    stream_id       uuid        not null check (stream_id <> '00000000-0000-0000-0000-000000000000'),
    stream_version  bigint      not null check (stream_version >= 1),
    event_type      text        not null check (event_type <> ''),
    schema_version  integer     not null check (schema_version >= 1),
    payload         jsonb       not null check (jsonb_typeof(payload) = 'object'),
    metadata        jsonb       not null check (jsonb_typeof(metadata) = 'object'),
    recorded_at     timestamptz not null default now(),
    prev_hash       bytea,
    hash            bytea       not null,
    unique (stream_id, stream_version)
);

create index events_transaction_order on ledger.events (transaction_id, global_position);
create index events_organization on ledger.events (organization_id, global_position);
create index events_type on ledger.events (event_type, global_position);
create index events_recorded_at on ledger.events (recorded_at);

comment on table ledger.events is
    'Append-only event log. UPDATE, DELETE and TRUNCATE are rejected by triggers; '
    'hash is SHA-256 over prev_hash and the canonical form (see ledger.events_chain), chained per stream.';

-- Computes the hash chain on insert, whatever the client sent: no client can write a wrong
-- chain, a backdated time or a gap in a stream's versions.
--
-- hash = sha256(prev_hash || canonical form), prev_hash being the hash of the stream's
-- previous event (empty for version 1). The canonical form writes every field but the
-- hashes and the transaction id as <byte length>:<text>; so that no two different events
-- share a form. The verifier in ledger-store (verify.rs) rebuilds the same bytes from the
-- stored columns on its own. The fields are concatenated in one expression (not a loop):
-- this trigger runs for every event and its cost is the append's.
create function ledger.events_chain() returns trigger
language plpgsql
as $$
declare
    previous bytea;
    payload_text text := new.payload::text;
    metadata_text text := new.metadata::text;
    id_text text;
    organization_text text := new.organization_id::text;
    stream_text text := new.stream_id::text;
    position_text text := new.global_position::text;
    version_text text := new.stream_version::text;
    schema_text text := new.schema_version::text;
    time_text text;
begin
    new.transaction_id := pg_current_xact_id();
    new.recorded_at := now();
    id_text := new.event_id::text;
    time_text := ((extract(epoch from new.recorded_at) * 1000000)::bigint)::text;
    if new.stream_version > 1 then
        select e.hash into previous
        from ledger.events e
        where e.stream_id = new.stream_id and e.stream_version = new.stream_version - 1;
        if not found then
            raise exception 'stream % has no version % to follow: versions must be contiguous',
                new.stream_id, new.stream_version - 1
                using errcode = 'check_violation';
        end if;
    end if;
    new.prev_hash := previous;
    new.hash := sha256(coalesce(previous, ''::bytea) || convert_to(
        octet_length(position_text) || ':' || position_text || ';' ||
        octet_length(id_text) || ':' || id_text || ';' ||
        octet_length(organization_text) || ':' || organization_text || ';' ||
        octet_length(new.stream_type) || ':' || new.stream_type || ';' ||
        octet_length(stream_text) || ':' || stream_text || ';' ||
        octet_length(version_text) || ':' || version_text || ';' ||
        octet_length(new.event_type) || ':' || new.event_type || ';' ||
        octet_length(schema_text) || ':' || schema_text || ';' ||
        octet_length(payload_text) || ':' || payload_text || ';' ||
        octet_length(metadata_text) || ':' || metadata_text || ';' ||
        octet_length(time_text) || ':' || time_text || ';', 'UTF8'));
    return new;
end
$$;

create trigger events_chain
    before insert on ledger.events
    for each row execute function ledger.events_chain();

create function ledger.events_reject_change() returns trigger
language plpgsql
as $$
begin
    raise exception 'ledger.events is append-only: % is not allowed; record a correcting event instead', tg_op
        using errcode = 'insufficient_privilege';
end
$$;

create trigger events_no_update_delete
    before update or delete on ledger.events
    for each row execute function ledger.events_reject_change();

create trigger events_no_truncate
    before truncate on ledger.events
    for each statement execute function ledger.events_reject_change();

-- One notification per appending statement wakes the subscribers; they poll as well,
-- because notifications are not durable.
create function ledger.events_notify() returns trigger
language plpgsql
as $$
begin
    perform pg_notify('ledger_events', '');
    return null;
end
$$;

create trigger events_notify
    after insert on ledger.events
    for each statement execute function ledger.events_notify();

-- Idempotency: a command's key, the hash of its request and the result it produced,
-- written in the same transaction as its events.
create table ledger.idempotency_keys (
    idempotency_key text        primary key check (idempotency_key <> '' and length(idempotency_key) <= 255),
    request_hash    bytea       not null,
    result          jsonb       not null,
    recorded_at     timestamptz not null default now()
);

-- Projection checkpoints: the (transaction_id, global_position) pair after which a
-- projection reads next. Written in the same transaction as the projection's rows.
create table ledger.projection_checkpoints (
    projection_name text        primary key,
    transaction_id  xid8        not null default '0',
    global_position bigint      not null default 0,
    events_applied  bigint      not null default 0,
    updated_at      timestamptz not null default now()
);

-- Roles are cluster-wide while migrations run per database, possibly in many databases at
-- once: tolerate the role existing already, or being created by a racing migration.
do $$
declare
    role_name text;
begin
    foreach role_name in array array['ledger_writer', 'ledger_projector', 'ledger_auditor'] loop
        begin
            execute format('create role %I nologin', role_name);
        exception when duplicate_object or unique_violation then
            null;
        end;
    end loop;
end
$$;

grant usage on schema ledger to ledger_writer, ledger_projector, ledger_auditor;
-- The writer appends and reads; it can never change or remove an event.
grant select, insert on ledger.events to ledger_writer;
grant select, insert on ledger.idempotency_keys to ledger_writer;
-- The projector reads the log and owns its checkpoints.
grant select on ledger.events to ledger_projector;
grant select, insert, update, delete on ledger.projection_checkpoints to ledger_projector;
-- The auditor reads.
grant select on ledger.events to ledger_auditor;
grant select on ledger.projection_checkpoints to ledger_auditor;
