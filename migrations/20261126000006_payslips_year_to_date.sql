-- Payslips and year-to-date totals (issue #21).
--
-- A run's pay date (its period's last day unless given) decides the tax year a payment
-- counts in. The payroll projection keeps per employee, tax year and currency the totals
-- of what is paid (gross, each deduction and contribution rule, net): a payment adds its
-- item, a reversal or a payment refused by the rail takes it out of the tax year it was
-- counted in. Each paid item keeps the totals of its tax year right after it was paid:
-- what its payslip shows as year to date, the same on every replay.
--
-- Runs paid before this migration have no tax year: `payroll-ledger rebuild payroll`
-- computes them from the log.
alter table payroll.payroll_runs add column pay_date date;
update payroll.payroll_runs set pay_date = period_end;
alter table payroll.payroll_runs alter column pay_date set not null;

alter table payroll.payroll_items
    add column tax_year_start date,   -- the tax year the payment counts (or counted) in
    add column year_to_date jsonb,    -- that tax year's totals just after this payment
    add column calculated_position bigint;  -- the calculation event that recorded the item

-- The tax year start of each organization that set one (1 January otherwise).
create table payroll.tax_years (
    organization_id uuid primary key,
    start_month     integer not null,
    start_day       integer not null,
    last_position   bigint not null
);

create table payroll.year_to_date (
    employee_id     uuid not null,
    tax_year_start  date not null,
    currency        text not null,
    organization_id uuid not null,
    tax_year_end    date not null,
    items           integer not null,   -- paid items counted
    gross           numeric not null,
    deductions      numeric not null,
    contributions   numeric not null,
    net             numeric not null,
    lines           jsonb not null,     -- per rule: [{"kind", "rule_id", "name", "amount"}]
    last_position   bigint not null,
    primary key (employee_id, tax_year_start, currency)
);
create index year_to_date_organization on payroll.year_to_date (organization_id, tax_year_start);

select ledger.grant_read_schema('payroll');
