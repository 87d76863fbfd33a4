"""The appliance's core: config, CLI, supervisor, protocol, shared-memory IPC and guards.

Imports nothing from `gateway` or `workers`, except `cli.py`, which wires them together.
"""
