-- Which privilege model a tenant's database was last brought to (0: the
-- original one, in which the tenant's login role owned its database), and
-- the fingerprint of the plan limits last applied to its role. The
-- reconciler picks up active tenants behind either and brings them level.
ALTER TABLE tenant_registry
    ADD COLUMN privilege_model integer NOT NULL DEFAULT 0,
    ADD COLUMN limits_applied text;
