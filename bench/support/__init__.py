"""Pieces the benches share: the fast Modbus servers they poll, and readings of /proc."""
