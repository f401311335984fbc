"""Protocol drivers: each speaks one protocol and yields sample batches; none knows MQTT or SQLite."""
