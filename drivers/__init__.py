"""Protocol drivers, the lowest layer: each speaks one protocol and yields sample batches.

None of them knows MQTT or SQLite, and nothing here imports `gateway`. The faces:
`registry` (one plugin per `driver = "..."`), `plugin` (the interface a protocol implements),
`base` (sink, health and events, fixed-rate schedule, backoff), `running` (restart after a
crash, the per-device status), `samples` (the batch and point index); `fields` and `models`
are the config vocabulary every protocol's device table is built from (pydantic, validating
side only). One package per protocol: `modbus`, `opcua`.
"""
