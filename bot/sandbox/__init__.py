"""`python -m bot sandbox`: the whole service on one machine, with a phone to try it on.

One process serves the real application (webhook, dispatcher, sender, health, metrics)
against the fake Cloud API on its own loopback port, with demo billing data, and adds a
phone simulator under `/sandbox/`: pick a demo customer, write to the bot, tap its
buttons and lists. What the simulator "sends" goes through the fake's inbound simulator,
so it reaches `/webhook` signed exactly as Meta would post it; what it shows is what the
bot sent to the fake Graph API.

Next to the phone, a billing panel plays the billing system's staff side for the chosen
customer (pay or void an invoice, suspend a service, make a quote…) through the local
backend, which emits the matching events; the panel lists them, as the alerts will send
them.

Everything binds to loopback: the simulator lets anyone speak as any demo customer.
"""

from bot.sandbox.phone import UNKNOWN_WA_ID
from bot.sandbox.runner import DEMO_BILLING, Sandbox, load_demo_billing, run_sandbox

__all__ = ["DEMO_BILLING", "UNKNOWN_WA_ID", "Sandbox", "load_demo_billing", "run_sandbox"]
