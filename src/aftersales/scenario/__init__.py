"""Scenario files (../shared/spec/SCENARIOS.md): scripted marketplace timelines."""
