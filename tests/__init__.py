"""Tally's tests, by layer: unit, property, simulation, e2e; shared helpers in helpers/."""
