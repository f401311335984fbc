"""Protocol drivers: each speaks one protocol and yields sample batches.

None of them knows MQTT or SQLite.
"""
