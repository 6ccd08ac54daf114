"""The configuration most chaos tests run: a slow simulated provider behind one priced model."""

from __future__ import annotations


def slow_model_config(settings: str, *, output_price: float = 2.0) -> str:
    """``settings`` (top-level lines), then the simulated provider ``slow`` (10 tokens a second) serving
    the model ``chaos/slow`` at 1 USD per million input tokens and ``output_price`` per million output."""
    return f"""{settings.strip()}

[providers.slow]
kind = "simulated"
tokens_per_second = 10.0

[[models]]
id = "chaos/slow"
input_price_per_m = 1.0
output_price_per_m = {output_price}
deployments = [{{ provider = "slow", upstream_model = "lorem" }}]
"""
