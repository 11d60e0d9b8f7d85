"""The WHMCS backend (`BILLING_BACKEND=whmcs`): the `Billing` interface over WHMCS's
HTTP API (`POST <WHMCS_URL>/includes/api.php`, form-encoded, `responsetype=json`).

What WHMCS's API cannot do is made up for here:

- No lookup by phone: a phone → client index in our database (`store/whmcs_index.py`),
  filled by `sync_clients()` and refreshed per client by `refresh_client()` (client
  events).
- No upgrade paths in GetProducts: they are read from `WHMCS_UPGRADES_FILE`
  (`config/whmcs_upgrades.toml` documents its format).
- No moving a service to another client: a transfer that passes the checks needs staff.
- No idempotency key: UpgradeProduct and AddCancelRequest are recorded in
  `whmcs_requests` before they are sent and are never sent twice for one request id.

Request parameters and answer fields follow developers.whmcs.com/api-reference/<action>,
checked against WHMCS 8.7's own `includes/api/*.php` (the documentation leaves out most
answer fields and the quirks: empty lists as `""`, GetInvoice's `"status": "error"`,
numbers sometimes as strings).

The modules, one job each:

- `billing`: `WhmcsBilling`, the `Billing` the flows use, made of the others.
- `api`: sending an action to WHMCS and telling its errors apart.
- `catalog`: WHMCS's products and prices, kept a few minutes.
- `mapping`: WHMCS's records as our billing types.
- `values`: WHMCS's loosely typed values (ids, amounts, dates).
- `phone_index`: our phone → client index.
- `ledger`: the record that makes a write happen at most once per request id.
- `upgrade_paths`: `WHMCS_UPGRADES_FILE`.
"""

from bot.whmcs.api import ACTIONS, WHMCS_ERROR
from bot.whmcs.billing import WhmcsBilling
from bot.whmcs.upgrade_paths import UpgradePaths

__all__ = ["ACTIONS", "WHMCS_ERROR", "UpgradePaths", "WhmcsBilling"]
