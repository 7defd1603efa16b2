"""Pluggable agents, one algorithm a file (installed as ``rlnorm.agents``)."""
