-- Pay schedules with ids of their own, and which regular run pays each of their periods.
-- The guarantee (one live regular run per period) is in the log: the `pay_schedule` stream
-- of each schedule records claims and releases. These tables are its read side.
create table payroll.pay_schedules (
    pay_schedule_id uuid primary key,
    organization_id uuid not null,
    name            text not null,
    frequency       text not null,
    anchor_date     date not null,
    is_default      boolean not null,
    created_at      timestamptz not null,
    last_position   bigint not null
);
create index pay_schedules_organization on payroll.pay_schedules (organization_id, pay_schedule_id);

create table payroll.pay_period_claims (
    pay_schedule_id uuid not null,
    period_start    date not null,
    period_end      date not null,
    organization_id uuid not null,
    payroll_run_id  uuid not null,
    claimed_at      timestamptz not null,
    last_position   bigint not null,
    primary key (pay_schedule_id, period_start)
);

-- The organization's single schedule: now `pay_schedules` (the default one).
drop table payroll.payroll_schedules;

alter table payroll.payroll_runs add column pay_schedule_id uuid;
alter table employee.employees add column pay_schedule_id uuid;

select ledger.grant_read_schema('payroll');
select ledger.grant_read_schema('employee');
