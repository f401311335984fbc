"""The energy stage's pieces: windows on the local calendar, units, carriers, the aggregator."""
