-- Reports answer amounts as decimal strings, like every other answer of the API: the
-- compliance projection now writes the register's totals and the journal's debits and
-- credits as numeric's text. Reports written before are rewritten the same way here, so
-- that the live tables equal what a rebuild gives (`->>` prints a jsonb number as numeric
-- prints it, scale kept).
update compliance.compliance_reports
set content = content || jsonb_build_object(
        'gross', content->>'gross',
        'deductions', content->>'deductions',
        'contributions', content->>'contributions',
        'net', content->>'net',
        'net_paid', content->>'net_paid')
where kind = 'payroll_register';

update compliance.compliance_reports
set content = content || jsonb_build_object(
        'total_debits', content->>'total_debits',
        'total_credits', content->>'total_credits',
        'accounts', (select coalesce(jsonb_agg(account || jsonb_build_object(
                                'debits', account->>'debits', 'credits', account->>'credits') order by n), '[]'::jsonb)
                     from jsonb_array_elements(content->'accounts') with ordinality as a(account, n)))
where kind = 'journal';
