-- The local billing backend (BILLING_BACKEND=local): the records of SPEC §4's import format.

CREATE TABLE billing_clients (
    id text PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL UNIQUE,
    phone text NOT NULL DEFAULT '',
    -- The phone reduced to the key WhatsApp ids are compared on (flows/phones.py).
    phone_key text,
    verified boolean NOT NULL DEFAULT false,
    account_manager text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_clients_phone_key ON billing_clients (phone_key);

CREATE TABLE billing_categories (
    id text PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE billing_products (
    id text PRIMARY KEY,
    category_id text NOT NULL REFERENCES billing_categories (id),
    name text NOT NULL
);

CREATE TABLE billing_product_prices (
    product_id text NOT NULL REFERENCES billing_products (id) ON DELETE CASCADE,
    cycle text NOT NULL CHECK (
        cycle IN ('monthly', 'quarterly', 'semiannually', 'annually', 'biennially', 'triennially')
    ),
    amount numeric(12, 2) NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (product_id, cycle)
);

CREATE TABLE billing_product_upgrades (
    product_id text NOT NULL REFERENCES billing_products (id) ON DELETE CASCADE,
    target_id text NOT NULL REFERENCES billing_products (id),
    PRIMARY KEY (product_id, target_id)
);

CREATE TABLE billing_services (
    id text PRIMARY KEY,
    client_id text NOT NULL REFERENCES billing_clients (id),
    product_id text NOT NULL REFERENCES billing_products (id),
    label text NOT NULL,
    status text NOT NULL CHECK (
        status IN ('pending', 'active', 'suspended', 'cancelled', 'terminated')
    ),
    billing_cycle text NOT NULL CHECK (
        billing_cycle IN (
            'monthly', 'quarterly', 'semiannually', 'annually', 'biennially', 'triennially'
        )
    ),
    amount numeric(12, 2) NOT NULL CHECK (amount >= 0),
    period_start date,
    next_due date,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_services_client ON billing_services (client_id);

CREATE TABLE billing_invoices (
    id text PRIMARY KEY,
    client_id text NOT NULL REFERENCES billing_clients (id),
    service_id text REFERENCES billing_services (id),
    total numeric(12, 2) NOT NULL CHECK (total >= 0),
    status text NOT NULL CHECK (status IN ('unpaid', 'paid', 'cancelled')),
    due date,
    created_by_bot boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_invoices_client ON billing_invoices (client_id);
CREATE INDEX billing_invoices_service ON billing_invoices (service_id);

CREATE TABLE billing_domains (
    id text PRIMARY KEY,
    client_id text NOT NULL REFERENCES billing_clients (id),
    name text NOT NULL,
    status text NOT NULL,
    auto_renew boolean NOT NULL DEFAULT true,
    next_due date
);
CREATE INDEX billing_domains_client ON billing_domains (client_id);
