-- The privilege model a spare was built on (registry::tenants::PRIVILEGE_MODEL
-- of the code that built it). A claim takes only spares on the current model
-- and the refill retires the others, as it retires spares behind the
-- template: a spare carries its model inside its database, and a claim
-- changes nothing there. Spares from before this column were built on model 1.
ALTER TABLE warm_spares ADD COLUMN privilege_model integer NOT NULL DEFAULT 1;
ALTER TABLE warm_spares ALTER COLUMN privilege_model DROP DEFAULT;
