-- Read models: one schema per area, each owned by one projection (ledger-projections).
-- Every row carries last_position, the global position of the last event that changed it.
-- Tables use natural keys or identity columns only (no serial sequences, no foreign keys),
-- so that a rebuild can copy them into a shadow schema with `like ... including all` and
-- swap it in.

create schema organization;
create table organization.organizations (
    organization_id uuid primary key,
    name            text not null,
    base_currency   text not null,
    registered_at   timestamptz not null,
    last_position   bigint not null
);
create table organization.organization_settings (
    organization_id uuid not null,
    key             text not null,
    value           jsonb not null,
    last_position   bigint not null,
    primary key (organization_id, key)
);
create table organization.deduction_rules (
    organization_id   uuid not null,
    rule_id           text not null,
    name              text not null,
    party             text not null,
    calculation       jsonb not null,
    liability_account text not null,
    last_position     bigint not null,
    primary key (organization_id, rule_id)
);

create schema employee;
create table employee.employees (
    employee_id         uuid primary key,
    organization_id     uuid not null,
    full_name           text not null,
    email               text,
    position            text not null,
    department          text not null,
    currency            text not null,
    pay_frequency       text not null,
    -- The rate with the latest effective date (the one in force from then on).
    rate_amount         numeric not null,
    rate_basis          text not null,
    rate_effective_from date not null,
    kyc_status          text not null,
    status              text not null,
    start_date          date not null,
    end_date            date,
    last_position       bigint not null
);
create index employees_organization on employee.employees (organization_id, employee_id);
create table employee.employee_history (
    employee_id     uuid not null,
    global_position bigint not null,
    organization_id uuid not null,
    change          text not null,          -- 'pay_rate' | 'position'
    valid_from      date not null,
    valid_to        date,                   -- the day before the next change; null while current
    rate_amount     numeric,
    rate_basis      text,
    position        text,
    department      text,
    reason          text,
    recorded_at     timestamptz not null,
    last_position   bigint not null,
    primary key (employee_id, change, global_position)
);
create index employee_history_validity on employee.employee_history (employee_id, change, valid_from);

create schema wallet;
create table wallet.wallets (
    wallet_id       uuid primary key,
    organization_id uuid not null,
    employee_id     uuid not null,
    public_key      text not null,
    currency        text not null,
    balance         numeric not null,
    status          text not null,
    last_position   bigint not null
);
create index wallets_organization on wallet.wallets (organization_id);
create index wallets_employee on wallet.wallets (employee_id);
create table wallet.wallet_transactions (
    wallet_id       uuid not null,
    global_position bigint not null,
    organization_id uuid not null,
    transaction_id  uuid not null,
    direction       text not null,          -- 'credit' | 'debit'
    amount          numeric not null,
    balance_after   numeric not null,
    recorded_at     timestamptz not null,
    last_position   bigint not null,
    primary key (wallet_id, global_position)
);
create index wallet_transactions_time on wallet.wallet_transactions (wallet_id, recorded_at);

create schema payroll;
create table payroll.payroll_runs (
    payroll_run_id   uuid primary key,
    organization_id  uuid not null,
    period_start     date not null,
    period_end       date not null,
    frequency        text not null,
    currency         text not null,
    kind             text not null,
    off_cycle_reason text,
    status           text not null,
    created_by       text not null,
    calculated_by    text,
    approved_by      text,
    item_count       bigint not null default 0,
    gross            numeric not null default 0,
    deductions       numeric not null default 0,
    contributions    numeric not null default 0,
    net              numeric not null default 0,
    employer_cost    numeric not null default 0,
    paid_count       bigint not null default 0,
    failed_count     bigint not null default 0,
    held_count       bigint not null default 0,
    created_at       timestamptz not null,
    last_position    bigint not null
);
create index payroll_runs_organization on payroll.payroll_runs (organization_id, period_start);
create table payroll.payroll_items (
    payroll_run_id     uuid not null,
    employee_id        uuid not null,
    organization_id    uuid not null,
    gross              numeric not null,
    deductions         numeric not null,
    contributions      numeric not null,
    net                numeric not null,
    earnings           jsonb not null,
    deduction_lines    jsonb not null,
    contribution_lines jsonb not null,
    status             text not null,       -- 'pending' | 'held' | 'paid' | 'failed' | 'reversed'
    hold_reason        text,
    transaction_id     uuid,
    failure_reason     text,
    last_position      bigint not null,
    primary key (payroll_run_id, employee_id)
);
create index payroll_items_employee on payroll.payroll_items (employee_id);
create index payroll_items_organization on payroll.payroll_items (organization_id, payroll_run_id);
create table payroll.payroll_schedules (
    organization_id uuid primary key,
    frequency       text not null,
    anchor_date     date not null,
    last_position   bigint not null
);
-- What was paid per employee and period (regular and retro lines; reversals negative): the
-- payment history a run's calculation needs for retro adjustments.
create table payroll.paid_earnings (
    employee_id     uuid not null,
    global_position bigint not null,
    line            integer not null,
    organization_id uuid not null,
    payroll_run_id  uuid not null,
    period_start    date not null,
    period_end      date not null,
    amount          numeric not null,
    currency        text not null,
    last_position   bigint not null,
    primary key (employee_id, global_position, line)
);

create schema transaction;
create table transaction.transactions (
    transaction_id  uuid primary key,
    organization_id uuid not null,
    status          text not null,
    reference_kind  text not null,
    payroll_run_id  uuid,
    employee_id     uuid,
    wallet_id       uuid,
    signature       text,
    block_hash      text,
    failure_reason  text,
    recorded_at     timestamptz not null,
    last_position   bigint not null
);
create index transactions_organization on transaction.transactions (organization_id, recorded_at);
create index transactions_run on transaction.transactions (payroll_run_id);
create table transaction.transaction_logs (
    transaction_id  uuid not null,
    global_position bigint not null,
    organization_id uuid not null,
    status          text not null,
    detail          jsonb not null,
    recorded_at     timestamptz not null,
    last_position   bigint not null,
    primary key (transaction_id, global_position)
);
create table transaction.postings (
    transaction_id  uuid not null,
    line            integer not null,
    organization_id uuid not null,
    account         text not null,
    direction       text not null,
    amount          numeric not null,
    currency        text not null,
    last_position   bigint not null,
    primary key (transaction_id, line)
);
create index postings_account on transaction.postings (account);
-- Pending and settled postings count; a failed or voided transaction's postings are taken out.
create table transaction.account_balances (
    account         text not null,
    currency        text not null,
    organization_id uuid not null,
    debits          numeric not null,
    credits         numeric not null,
    balance         numeric not null,      -- debits - credits: money in minus money out
    last_position   bigint not null,
    primary key (account, currency)
);
create index account_balances_organization on transaction.account_balances (organization_id);

create schema notification;
create table notification.notification_templates (
    kind    text primary key,
    subject text not null,
    body    text not null
);
insert into notification.notification_templates (kind, subject, body) values
    ('run_awaiting_approval', 'Payroll run awaiting approval', 'Payroll run {payroll_run_id} for {period} is calculated: {items} items, net {net}. A second person must approve it.'),
    ('payslip_ready', 'Your payslip is ready', 'You were paid {net} for {period}.'),
    ('payment_failed', 'A payment failed', 'The payment to employee {employee_id} in run {payroll_run_id} failed: {reason}.'),
    ('payment_held', 'A payment is held', 'The payment to employee {employee_id} in run {payroll_run_id} is held: {reason}.'),
    ('run_completed', 'Payroll run completed', 'Payroll run {payroll_run_id} ended {status}: {paid} paid, {failed} failed, {held} held.');
create table notification.notifications (
    global_position bigint not null,
    recipient       text not null,          -- 'employee:<id>' or 'organization:<id>:approvers' ...
    kind            text not null,
    organization_id uuid not null,
    payload         jsonb not null,
    created_at      timestamptz not null,
    last_position   bigint not null,
    primary key (global_position, recipient, kind)
);
create index notifications_organization on notification.notifications (organization_id, created_at);
create index notifications_recipient on notification.notifications (recipient, created_at);

create schema compliance;
create table compliance.audit_logs (
    global_position bigint primary key,
    organization_id uuid not null,
    actor           text not null,
    role            text,
    action          text not null,          -- the event type
    resource        text not null,          -- the stream type
    resource_id     uuid not null,          -- the stream id
    stream_version  bigint not null,
    correlation_id  uuid,
    idempotency_key text,
    recorded_at     timestamptz not null,
    last_position   bigint not null
);
create index audit_logs_organization on compliance.audit_logs (organization_id, recorded_at);
create index audit_logs_resource on compliance.audit_logs (resource_id, global_position);
create index audit_logs_actor on compliance.audit_logs (actor, recorded_at);
-- Working tables of the compliance projection: what it needs to write its reports, kept
-- apart from the payroll and transaction schemas so that each projection rebuilds alone.
create table compliance.run_items (
    payroll_run_id  uuid not null,
    employee_id     uuid not null,
    organization_id uuid not null,
    item            jsonb not null,
    status          text not null,
    transaction_id  uuid,
    last_position   bigint not null,
    primary key (payroll_run_id, employee_id)
);
create table compliance.run_postings (
    payroll_run_id  uuid not null,
    transaction_id  uuid not null,
    line            integer not null,
    account         text not null,
    direction       text not null,
    amount          numeric not null,
    currency        text not null,
    last_position   bigint not null,
    primary key (payroll_run_id, transaction_id, line)
);
create table compliance.compliance_reports (
    payroll_run_id  uuid not null,
    kind            text not null,          -- 'payroll_register' | 'journal'
    organization_id uuid not null,
    content         jsonb not null,
    generated_at    timestamptz not null,
    last_position   bigint not null,
    primary key (payroll_run_id, kind)
);
create index compliance_reports_organization on compliance.compliance_reports (organization_id, generated_at);

-- Grants on a read schema, applied at migration and again after a rebuild swaps a shadow
-- schema in (a swapped-in schema has no grants of its own).
create function ledger.grant_read_schema(schema_name text) returns void
language plpgsql
as $$
begin
    execute format('grant usage on schema %I to ledger_projector, ledger_auditor', schema_name);
    execute format('grant select, insert, update, delete, truncate on all tables in schema %I to ledger_projector', schema_name);
    execute format('grant select on all tables in schema %I to ledger_auditor', schema_name);
end
$$;

select ledger.grant_read_schema(schema_name)
from unnest(array['organization', 'employee', 'wallet', 'payroll', 'transaction', 'notification', 'compliance']) as s(schema_name);
