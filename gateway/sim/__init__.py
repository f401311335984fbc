"""The simulated plant (meters, PLC) behind `ironwatt demo`, the tests and the benches.

Server-side code only; nothing here is imported by the gateway at run time.
"""
