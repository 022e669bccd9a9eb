"""Dynamical systems reconstruction: benchmark systems, measures, evaluation."""
