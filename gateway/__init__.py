"""ironwatt: edge gateway for industrial energy data (Modbus/OPC UA in, SQLite buffer, MQTT out)."""

__version__ = "0.1.0"
