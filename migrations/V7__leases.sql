-- Reconciler leases: a worker claims a tenant by writing a lease in a short
-- transaction and does the host work outside any control transaction, so no
-- row lock is held while a server is slow (webhook writes to the row never
-- wait for a provisioning step). A lease that lapses (its worker died) is
-- taken over by any worker; an outcome is recorded only under its lease.
ALTER TABLE tenant_registry
    ADD COLUMN lease_token uuid,
    ADD COLUMN lease_expires_at timestamptz,
    ADD CONSTRAINT tenant_lease_whole
        CHECK ((lease_token IS NULL) = (lease_expires_at IS NULL));

-- Per-host backoff: after a failure to reach a host, its tenants wait until
-- retry_after, and then one attempt at a time probes it, so a dead host does
-- not occupy every worker while other hosts' tenants wait.
ALTER TABLE db_hosts
    ADD COLUMN failures integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    ADD COLUMN retry_after timestamptz,
    ADD COLUMN last_failure text;
