-- TLS to each db host, as libpq names it: sslmode (disable, prefer, require,
-- verify-ca, verify-full) and sslrootcert (a CA file on the control plane's
-- machine, or 'system' for the operating system's store). NULL inherits the
-- setting of database.url, so the default host (seeded from database.url)
-- and hosts registered before this migration keep using database.url's.
-- Applies to admin connections and to tenant connections to the host.
ALTER TABLE db_hosts
    ADD COLUMN sslmode text
        CHECK (sslmode IN ('disable', 'prefer', 'require', 'verify-ca', 'verify-full')),
    ADD COLUMN sslrootcert text CHECK (sslrootcert <> '');
