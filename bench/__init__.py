"""Benchmarks of the whole service on this machine: `python -m bench.run` (`make bench`).

Every moving part runs in its own process, as in production: the service
(`python -m bot serve`), the fake Cloud API (`python -m bot.fakes.cloud_api`), a bare
aiohttp server for the ceiling (`python -m bench.bare_server`), and the load generator
(this package, in the `bench.run` process).
"""
