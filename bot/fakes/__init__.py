"""Stand-ins for the systems the bot talks to, kept apart from the production modules.

Each is a real HTTP server on loopback that answers as the real one does, quirks
included, so tests, the sandbox and the benchmarks exercise the same code paths as
production (nothing here is imported by `serve`):

- `cloud_api`: Meta's WhatsApp Cloud API — accepts sends, checks WhatsApp's limits,
  posts signed status webhooks back, injects failures (`python -m bot.fakes.cloud_api`).
- `whmcs`: WHMCS's `includes/api.php` over in-memory billing data, with injectable
  failures (`python -m bot.fakes.whmcs`).
- `payloads`: builders of the webhook payloads Meta posts (classic and 2026 shapes),
  signed as Meta signs them.
"""
