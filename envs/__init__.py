"""Batched environments written in torch (installed as ``rlnorm.envs``)."""
