-- An upgrade with nothing to pay is applied at once, with no invoice (as WHMCS does): an
-- upgrade order may now have no invoice, and every order carries the request that made
-- it, so the same request asked again finds it whichever kind it is.
ALTER TABLE billing_upgrade_orders DROP CONSTRAINT billing_upgrade_orders_pkey;
ALTER TABLE billing_upgrade_orders ALTER COLUMN invoice_id DROP NOT NULL;
ALTER TABLE billing_upgrade_orders ADD COLUMN id bigserial PRIMARY KEY;
ALTER TABLE billing_upgrade_orders ADD COLUMN request_id text UNIQUE;
CREATE UNIQUE INDEX billing_upgrade_orders_invoice ON billing_upgrade_orders (invoice_id)
    WHERE invoice_id IS NOT NULL;
