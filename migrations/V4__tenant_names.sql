-- Tenant database and role names are generated (prefix + hex id). The
-- registry keeps out anything that could not be such a name, and a host
-- without both names (or names without a host), so that code reading a row
-- can hold them typed and never has to guess.
ALTER TABLE tenant_registry
    ADD CONSTRAINT tenant_registry_db_name_format CHECK (db_name ~ '^[a-z0-9_]{1,63}$'),
    ADD CONSTRAINT tenant_registry_db_role_format CHECK (db_role ~ '^[a-z0-9_]{1,63}$'),
    ADD CONSTRAINT tenant_registry_placement_whole CHECK (
        (db_host_id IS NULL) = (db_name IS NULL) AND (db_name IS NULL) = (db_role IS NULL));
