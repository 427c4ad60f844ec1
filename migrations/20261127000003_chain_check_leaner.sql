-- The chain check does each row's work once (issue #20).
--
-- ledger.events_check_chain checks every row of a statement the append functions did not
-- write: the batched appends' COPY (a payroll's payments, a 30,000-event bench batch), a
-- writer's own INSERT. It took a third of a 30,000-event batched append and 28 % of the COPY
-- time of the 10,000-employee run's payments. What it did twice or more than it needed:
--
-- * the hash: ledger.event_hash is an inlined SQL function whose canonical form names each
--   text twice (its byte length, then the text), so payload::text and metadata::text (jsonb
--   written out as text, the costliest part of a row's check), the numbers' text and the
--   time's epoch were computed twice per row. Here each text is computed once (a lateral
--   subquery kept apart with OFFSET 0, so the planner does not substitute the expressions back
--   in), and the time's field once per statement: a row whose recorded_at is not now() is
--   refused before its hash is looked at, so the hash is checked with now().
-- * the previous event: one index probe per row. Now a row whose previous version the same
--   statement wrote takes it from there (lag() over the statement's rows by stream and
--   version; what each row is checked against by itself is computed before that sort, so the
--   sort carries no payload); only a stream's first row in the statement probes the index,
--   and a version 1 none (versions start at 1: it has no previous event).
--
-- Measured (pg_stat_user_functions, the old and the new function swapped between runs of
-- `payroll-ledger bench --only append --events 30000`): 244-266 ms per 30,000-row statement
-- before, 166-171 ms after. What is refused, and in what order, is unchanged: the same
-- problems, the first by position, the same messages. The canonical form is the one
-- ledger.event_hash writes (the tests append rows it hashed, with payloads jsonb rewrites).
create or replace function ledger.events_check_chain() returns trigger
language plpgsql
set jit = off
as $$
declare
    reserved bigint := coalesce(pg_sequence_last_value('ledger.events_global_position_seq'), 0);
    writing xid8 := ledger.current_transaction_id();
    written_at text := ((extract(epoch from now()) * 1000000)::bigint)::text;
    written_at_field text := octet_length(written_at) || ':' || written_at || ';';
    bad record;
begin
    select * into bad from (
        select n.global_position, n.stream_id, n.stream_version,
            case
                when n.stream_version > 1 and previous.hash is null then 'gap'
                when n.prev_hash is distinct from previous.hash then 'prev_hash'
                when n.global_position <= previous.global_position then 'position_order'
                when n.global_position > reserved then 'position_unreserved'
                when n.time_wrong then 'recorded_at'
                when n.transaction_wrong then 'transaction_id'
                when n.hash_wrong then 'hash'
            end as problem
        from (
            -- Each row with the one before it in its stream, if the statement wrote that too.
            select own.*,
                lag(own.stream_version) over stream as before_version,
                lag(own.hash) over stream as before_hash,
                lag(own.global_position) over stream as before_position
            from (
                -- What a row is checked against by itself, before the sort by stream: the sort
                -- then carries no payload.
                select i.global_position, i.stream_id, i.stream_version, i.prev_hash, i.hash,
                    i.recorded_at <> now() as time_wrong,
                    i.transaction_id <> writing as transaction_wrong,
                    i.hash is distinct from sha256(coalesce(i.prev_hash, ''::bytea) || convert_to(concat(
                        octet_length(texts.global_position), ':', texts.global_position, ';',
                        '36:', i.event_id, ';36:', i.organization_id, ';',
                        octet_length(i.stream_type), ':', i.stream_type, ';',
                        '36:', i.stream_id, ';',
                        octet_length(texts.stream_version), ':', texts.stream_version, ';',
                        octet_length(i.event_type), ':', i.event_type, ';',
                        octet_length(texts.schema_version), ':', texts.schema_version, ';',
                        octet_length(texts.payload), ':', texts.payload, ';',
                        octet_length(texts.metadata), ':', texts.metadata, ';',
                        written_at_field), 'UTF8')) as hash_wrong
                from inserted i
                cross join lateral (
                    select i.global_position::text as global_position, i.stream_version::text as stream_version,
                        i.schema_version::text as schema_version, i.payload::text as payload,
                        i.metadata::text as metadata
                    offset 0
                ) texts
                offset 0
            ) own
            window stream as (partition by own.stream_id order by own.stream_version)
        ) n
        -- One index probe for a stream's first row in the statement: "limit 1" keeps the
        -- planner from turning the lookup into a join that reads the whole log (it knows
        -- nothing of the transition table's size).
        left join lateral (
            select e.hash, e.global_position from ledger.events e
            where n.stream_version > 1 and n.before_version is distinct from n.stream_version - 1
                and e.stream_id = n.stream_id and e.stream_version = n.stream_version - 1
            limit 1
        ) probed on true
        cross join lateral (
            select
                case when n.before_version = n.stream_version - 1 then n.before_hash else probed.hash end as hash,
                case when n.before_version = n.stream_version - 1 then n.before_position else probed.global_position end
                    as global_position
        ) previous
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
