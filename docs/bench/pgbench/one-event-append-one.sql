-- One ledger.append_one of one event to one of 2,000 streams, any version (docs/bench/pgbench/before-after.sh).
\set s random(1, 2000)
select status from ledger.append_one('00000000-0000-0000-0000-000000000001'::uuid, 'bench', ('00000000-0000-0000-0000-' || lpad(:s::text, 12, '0'))::uuid, null, :s::int8, gen_random_uuid(), 'Happened', 1, '{"amount":"12.50","note":"some text of a payload"}', '{"actor":"bench","request":"r"}', null, null);
