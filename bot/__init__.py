"""WhatsApp customer-service bot for a web-hosting company: HTTP, workers and wiring."""
