-- Upgrades left unpaid: a service's pending upgrade is looked up before every new order
-- (Billing.pending_upgrade: one at a time), and the upgrade invoices the bot placed are
-- voided once unpaid for too long (Billing.expire_upgrades).

-- WHMCS: what expiring made of an upgrade the bot placed, so that each is looked at once.
-- `expiry`: voided (we cancelled its invoice), settled (found paid or cancelled already),
-- gone (WHMCS no longer has the invoice); NULL: not yet. `expiry_claimed_at`: a process
-- is on it — two never void the same invoice; a claim lapses after some minutes, so one
-- that died leaves it to the next run.
ALTER TABLE whmcs_requests
    ADD COLUMN expiry text CHECK (expiry IN ('voided', 'settled', 'gone')),
    ADD COLUMN expiry_at timestamptz,
    ADD COLUMN expiry_claimed_at timestamptz;
CREATE INDEX whmcs_requests_expiring ON whmcs_requests (created_at)
    WHERE action = 'UpgradeProduct' AND status = 'done' AND expiry IS NULL;
CREATE INDEX whmcs_requests_upgrade_service ON whmcs_requests
    (client_id, (result ->> 'service_id')) WHERE action = 'UpgradeProduct';

-- Local billing: the bot's unpaid invoices by age (expiry), a service's upgrade orders
-- (its pending one).
CREATE INDEX billing_invoices_bot_unpaid ON billing_invoices (created_at)
    WHERE status = 'unpaid' AND created_by_bot;
CREATE INDEX billing_upgrade_orders_service ON billing_upgrade_orders (service_id);
