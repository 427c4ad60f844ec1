-- One ledger.append of one event to one of 2,000 streams, any version (docs/bench/pgbench/before-after.sh).
\set s random(1, 2000)
select status from ledger.append(array['00000000-0000-0000-0000-000000000001'::uuid], array['bench'], array[('00000000-0000-0000-0000-' || lpad(:s::text, 12, '0'))::uuid], array[null::int8], array[1], array[:s::int8], array[gen_random_uuid()], array['Happened'], array[1], array['{"amount":"12.50","note":"some text of a payload"}'], '{"actor":"bench","request":"r"}', null, null);
