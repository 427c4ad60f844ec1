-- Ids of new entities derived from an idempotency key are UUID v5 of the organization, the
-- key and the purpose, in a namespace of this database's own drawn at random here (it was
-- a public one): another tenant who knows an organization's id and one of its keys cannot
-- compute the id that organization's command will take, and so cannot take it first. A
-- dump carries it, so a retry after a restore derives the same id.
create table ledger.id_namespace (
    namespace uuid not null,
    only_row  boolean primary key default true check (only_row)
);
insert into ledger.id_namespace (namespace) values (gen_random_uuid());
