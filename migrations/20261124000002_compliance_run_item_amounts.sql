-- The compliance projection's working rows of a run's items keep the four amounts and the
-- hold its payroll register reads, not the whole item as jsonb: a 100,000-item run's
-- register aggregated 100,000 jsonb documents (2.5 s), and every calculation chunk was
-- turned into JSON twice on its way in. The register's content is unchanged (amounts keep
-- their scale as numeric and print as before).
alter table compliance.run_items
    add column gross numeric,
    add column deductions numeric,
    add column contributions numeric,
    add column net numeric,
    add column hold jsonb;
update compliance.run_items set
    gross = (item->'gross'->>'amount')::numeric,
    deductions = (item->'deductions_total'->>'amount')::numeric,
    contributions = (item->'contributions_total'->>'amount')::numeric,
    net = (item->'net'->>'amount')::numeric,
    hold = nullif(item->'hold', 'null'::jsonb);
alter table compliance.run_items
    drop column item,
    alter column gross set not null,
    alter column deductions set not null,
    alter column contributions set not null,
    alter column net set not null;
