"""Provider adapters, by :attr:`ProviderSettings.kind`."""

from __future__ import annotations

from shared.errors import ConfigError
from shared.settings import ProviderSettings
from workers.providers.base import ProviderAdapter


def make_adapter(provider: ProviderSettings) -> ProviderAdapter:
    """The adapter for one provider; a worker process makes one and shares it across its jobs."""
    if provider.kind == "simulated":
        from workers.providers.simulated import SimulatedProvider

        return SimulatedProvider(provider)
    if provider.kind == "openai":
        from workers.providers.openai_compatible import OpenAICompatibleProvider

        return OpenAICompatibleProvider(provider)
    if provider.kind == "anthropic":
        from workers.providers.anthropic import AnthropicProvider

        return AnthropicProvider(provider)
    raise ConfigError(f"provider {provider.name!r}: no adapter for kind {provider.kind!r} in this worker")
